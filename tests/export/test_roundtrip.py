"""Export -> load with the standard library -> the scores peft-ir gives (and not the base's), for every format and
every method family: merged (full, bitfit, lora), peft adapter (lora), peft-ir module (the others, lora unmerged)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from export_texts import PASSAGES, QUERIES, Variant

from peft_ir.export.build import export_model
from peft_ir.export.config import ExportConfig
from peft_ir.export.module import CLASS_REF, load_model
from peft_ir.export.source import read_trained

# peft calls transformers' deprecated is_gradient_checkpointing when it loads an adapter
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
TOL = 1e-5
PAIRS = [(q, p) for q in QUERIES[:2] for p in PASSAGES[:2]]  # within the re-ranker's limits (8 and 24 tokens)


def _export(train_dir: Path, out: Path, fmt: str, merge: bool = False) -> dict:
    return export_model(train_dir, ExportConfig(format=fmt, output=str(out), merge=merge), command="test")


def _types(out: Path) -> list[str]:
    return [m["type"] for m in json.loads((out / "modules.json").read_text())]


# -- what peft-ir itself computes ------------------------------------------------------------------------------------
_UNTUNED: dict[str, np.ndarray] = {}


def untuned(kind: str, train_dir: Path) -> np.ndarray:
    """The base's output (every variant of a kind shares one base)."""
    if kind not in _UNTUNED:
        _UNTUNED[kind] = (peft_ir_vectors(train_dir, adapter=False) if kind == "retriever"
                          else peft_ir_scores(train_dir, adapter=False))
    return _UNTUNED[kind]


def peft_ir_vectors(train_dir: Path, adapter: bool = True) -> np.ndarray:
    from peft_ir.retriever.encoder import BiEncoder

    spec = read_trained(train_dir).spec
    encoder = BiEncoder(replace(spec, adapter=str(train_dir / "adapter") if adapter else None), device="cpu",
                        merge=False)
    return np.concatenate([encoder.encode_queries(QUERIES), encoder.encode_passages(PASSAGES)])


def peft_ir_scores(train_dir: Path, adapter: bool = True) -> np.ndarray:
    from peft_ir.reranker.model import CrossEncoder

    ce = CrossEncoder(read_trained(train_dir).spec, adapter=train_dir / "adapter" if adapter else None, device="cpu")
    return np.asarray(ce.score([q for q, _ in PAIRS], [p for _, p in PAIRS]))


# -- the same through transformers alone -----------------------------------------------------------------------------
def mean_pooled(model: torch.nn.Module, tokenizer, texts: list[str],  # type: ignore[no-untyped-def]
                limit: int) -> np.ndarray:
    batch = tokenizer(texts, padding=True, truncation=True, max_length=limit, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()


def hf_vectors(model: torch.nn.Module, tokenizer) -> np.ndarray:  # type: ignore[no-untyped-def]
    model.eval()
    return np.concatenate([mean_pooled(model, tokenizer, QUERIES, 16), mean_pooled(model, tokenizer, PASSAGES, 32)])


def hf_scores(model: torch.nn.Module, tokenizer) -> np.ndarray:  # type: ignore[no-untyped-def]
    model.eval()
    batch = tokenizer([q for q, _ in PAIRS], [p for _, p in PAIRS], padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits[:, 0].numpy()


RETRIEVERS = [  # (method, sizes, format, --merge)
    ("full", {}, "sentence-transformers", False),
    ("bitfit", {}, "hf", False),
    ("lora", {"lora_r": 4}, "sentence-transformers", True),
    ("lora", {"lora_r": 4}, "hf", False),
    ("lora", {"lora_r": 4}, "peft", False),
    ("lora", {"lora_r": 4}, "sentence-transformers", False),
    ("adapter", {"r": 4}, "sentence-transformers", False),
    ("prefix", {"prefix_len": 4}, "sentence-transformers", False),
    ("mam", {"r": 4, "prefix_len": 4}, "sentence-transformers", False),
    ("iaa-m", {"r": 4, "ar": 4}, "sentence-transformers", False),
]


@pytest.mark.parametrize("method, sizes, fmt, merge", RETRIEVERS,
                         ids=[f"{m}-{f}{'-merge' if g else ''}" for m, _, f, g in RETRIEVERS])
def test_retriever_round_trip(method: str, sizes: dict, fmt: str, merge: bool, variant: Variant,
                              tiny_bert_dir: Path, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    train_dir = variant("retriever", method, **sizes)
    out = tmp_path / "export"
    s = _export(train_dir, out, fmt, merge)
    expected = peft_ir_vectors(train_dir)
    assert np.abs(expected - untuned("retriever", train_dir)).max() > 1e-3  # the tuning shows
    merged = method in ("full", "bitfit") or merge or fmt == "hf"
    assert s["merged"] is merged
    if fmt == "sentence-transformers":
        assert all(t.startswith("sentence_transformers.") for t in _types(out)) is merged
        model = SentenceTransformer(str(out), device="cpu") if merged else load_model(out, device="cpu")
        assert _types(out)[0] == ("sentence_transformers.base.modules.transformer.Transformer" if merged else CLASS_REF)
        got = np.concatenate([model.encode_query(QUERIES), model.encode_document(PASSAGES)])
    elif fmt == "hf":
        got = hf_vectors(AutoModel.from_pretrained(out), AutoTokenizer.from_pretrained(out))
    else:
        from peft import PeftModel

        tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
        got = hf_vectors(PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_bert_dir), str(out)), tokenizer)
        st = SentenceTransformer(str(tiny_bert_dir), device="cpu")  # plain mean pooling, no limits: short texts
        st.load_adapter(str(out))
        st.eval()
        short = np.concatenate([st.encode_query(QUERIES[:2], normalize_embeddings=True),
                                st.encode_document(PASSAGES[:2], normalize_embeddings=True)])
        assert np.abs(short - expected[[0, 1, 3, 4]]).max() <= TOL
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= TOL


RERANKERS = [
    ("full", {}, "cross-encoder", False),
    ("bitfit", {}, "hf", False),
    ("lora", {"lora_r": 4}, "cross-encoder", True),
    ("lora", {"lora_r": 4, "train_pooler": True}, "peft", False),
    ("lora", {"lora_r": 4}, "cross-encoder", False),
    ("parallel", {"r": 4}, "cross-encoder", False),
    ("iaa-s", {"r": 4, "ar": 4, "train_pooler": True}, "cross-encoder", False),
    ("iaa-l", {"r": 4, "ar": 4}, "cross-encoder", False),
]


@pytest.mark.parametrize("method, sizes, fmt, merge", RERANKERS,
                         ids=[f"{m}-{f}{'-merge' if g else ''}{'-pooler' if 'train_pooler' in s else ''}"
                              for m, s, f, g in RERANKERS])
def test_reranker_round_trip(method: str, sizes: dict, fmt: str, merge: bool, variant: Variant,
                             tiny_bert_dir: Path, tmp_path: Path) -> None:
    from sentence_transformers import CrossEncoder
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    train_dir = variant("reranker", method, **sizes)
    out = tmp_path / "export"
    s = _export(train_dir, out, fmt, merge)
    expected = peft_ir_scores(train_dir)
    assert np.abs(expected - untuned("reranker", train_dir)).max() > 1e-3
    merged = method in ("full", "bitfit") or merge or fmt == "hf"
    assert s["merged"] is merged
    if fmt == "cross-encoder":
        model = CrossEncoder(str(out), device="cpu") if merged else load_model(out, device="cpu")
        assert isinstance(model, CrossEncoder)
        assert _types(out)[0] == ("sentence_transformers.base.modules.transformer.Transformer" if merged else CLASS_REF)
        got = model.predict(PAIRS)
    elif fmt == "hf":
        got = hf_scores(AutoModelForSequenceClassification.from_pretrained(out), AutoTokenizer.from_pretrained(out))
    else:
        from peft import PeftModel
        from safetensors.torch import load_file

        base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=1)  # a new random head
        model = PeftModel.from_pretrained(base, str(out))
        got = hf_scores(model, AutoTokenizer.from_pretrained(tiny_bert_dir))
        saved = load_file(str(out / "adapter_model.safetensors"))
        for name, weight in (("classifier", "weight"), ("bert.pooler", "dense.weight")):  # the head came back
            trained = saved[f"base_model.model.{name}.{weight}"]
            wrapper = model.base_model.model.get_submodule(name)  # peft's ModulesToSaveWrapper
            assert torch.equal(wrapper.modules_to_save["default"].get_parameter(weight), trained)
            assert not torch.equal(wrapper.original_module.get_parameter(weight), trained)
    assert np.abs(got - expected).max() <= TOL


@pytest.mark.parametrize("normalize", [True, False])
def test_prefixes_become_prompts_and_the_similarity_follows_normalisation(normalize: bool, variant: Variant,
                                                                           tiny_bert_dir: Path, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from peft_ir.retriever.config import EncoderSpec

    spec = EncoderSpec(model=str(tiny_bert_dir), normalize=normalize, query_prefix="query: ",
                       passage_prefix="passage: ", query_max_length=16, passage_max_length=32)
    train_dir = variant("retriever", "lora", spec=spec, lora_r=4)
    _export(train_dir, tmp_path / "e", "sentence-transformers", merge=True)
    model = SentenceTransformer(str(tmp_path / "e"), device="cpu")
    assert model.prompts == {"query": "query: ", "document": "passage: "}
    assert model.similarity_fn_name == ("cosine" if normalize else "dot")
    got = np.concatenate([model.encode_query(QUERIES), model.encode_document(PASSAGES)])
    assert np.abs(got - peft_ir_vectors(train_dir)).max() <= TOL
    assert bool((np.abs(np.linalg.norm(got, axis=1) - 1) < 1e-5).all()) is normalize


def test_peft_ir_module_saves_again_as_it_loaded(variant: Variant, tmp_path: Path) -> None:
    """A loaded module export saved anew is the same model: base weights under their own names (a trained pooler
    kept out of them, else the base's fingerprint check refuses the reload), the tuning beside them."""
    from safetensors.torch import load_file

    train_dir = variant("reranker", "iaa-s", r=4, ar=4, train_pooler=True)
    _export(train_dir, tmp_path / "a", "cross-encoder")
    model = load_model(tmp_path / "a", device="cpu")
    model.save(str(tmp_path / "b"))
    assert load_file(str(tmp_path / "a" / "model.safetensors")).keys() == \
        load_file(str(tmp_path / "b" / "model.safetensors")).keys()
    again = load_model(tmp_path / "b", device="cpu")
    assert np.abs(again.predict(PAIRS) - peft_ir_scores(train_dir)).max() <= TOL


def test_trust_remote_code_imports_only_the_installed_class(variant: Variant, tmp_path: Path) -> None:
    """sentence-transformers 6 refuses any module class outside its package unless trust_remote_code is set, even
    from a local folder; load_model needs no flag. With the flag the folder (which holds no code) loads too."""
    from sentence_transformers import CrossEncoder, SentenceTransformer

    train_dir = variant("retriever", "adapter", r=4)
    _export(train_dir, tmp_path / "e", "sentence-transformers")
    assert not list((tmp_path / "e").rglob("*.py"))
    with pytest.raises(ValueError, match="trust_remote_code"):
        SentenceTransformer(str(tmp_path / "e"), device="cpu")
    trusted = SentenceTransformer(str(tmp_path / "e"), device="cpu", trust_remote_code=True)
    expected = peft_ir_vectors(train_dir)
    assert np.abs(trusted.encode_query(QUERIES) - expected[:3]).max() <= TOL

    train_dir = variant("reranker", "iaa-l", r=4, ar=4)  # a CrossEncoder folder reads modules.json alike
    _export(train_dir, tmp_path / "c", "cross-encoder")
    with pytest.raises(ValueError, match="trust_remote_code"):
        CrossEncoder(str(tmp_path / "c"), device="cpu")
    trusted = CrossEncoder(str(tmp_path / "c"), device="cpu", trust_remote_code=True)
    assert np.abs(trusted.predict(PAIRS) - peft_ir_scores(train_dir)).max() <= TOL


# -- BitFit on bias-free decoders: zero biases added to every projection -------------------------------------------
def _tuned_and_exported(kind: str, train_dir: Path, exported: torch.nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """The outputs of peft-ir's tuned model (base + adapter) and of an exported model on one unpadded batch."""
    from transformers import AutoModel

    from peft_ir.reranker.model import load_base
    from peft_ir.tuning import load_tuned

    spec = read_trained(train_dir).spec
    base = AutoModel.from_pretrained(spec.model) if kind == "retriever" else load_base(spec, device="cpu")[0]
    tuned = load_tuned(base, train_dir / "adapter").eval()
    batch = {"input_ids": torch.randint(5, 99, (3, 6), generator=torch.Generator().manual_seed(0))}
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    with torch.no_grad():
        outs = [m.eval()(**batch) for m in (tuned, exported)]
    return tuple(o.logits.numpy() if kind == "reranker" else o.last_hidden_state.numpy() for o in outs)


@pytest.mark.parametrize("kind, fmt", [("retriever", "hf"), ("reranker", "hf"), ("retriever", "sentence-transformers"),
                                       ("reranker", "cross-encoder")])
def test_bitfit_added_biases_export_merged_with_the_configs_switches(kind: str, fmt: str, variant: Variant,
                                                                      tiny_decoder_dir, tmp_path: Path) -> None:
    """Llama's attention_bias and mlp_bias build exactly the biases BitFit added: the merged export turns them on
    and a plain from_pretrained loads every trained bias (none dropped as unexpected)."""
    from sentence_transformers import CrossEncoder, SentenceTransformer
    from transformers import AutoModel, AutoModelForSequenceClassification

    from peft_ir.reranker.config import CrossEncoderSpec
    from peft_ir.retriever.config import EncoderSpec

    model = str(tiny_decoder_dir("llama"))
    spec = EncoderSpec(model=model, query_max_length=16, passage_max_length=32) if kind == "retriever" else \
        CrossEncoderSpec(model=model, query_max_length=8, passage_max_length=24)
    train_dir = variant(kind, "bitfit", spec=spec)
    out = tmp_path / "export"
    assert _export(train_dir, out, fmt)["merged"] is True
    auto = AutoModel if kind == "retriever" else AutoModelForSequenceClassification
    exported, info = auto.from_pretrained(out, output_loading_info=True)  # sentence-transformers: weights in the root
    assert not info["unexpected_keys"] and not info["missing_keys"]
    assert exported.config.attention_bias is True and exported.config.mlp_bias is True
    tuned, got = _tuned_and_exported(kind, train_dir, exported)
    assert np.abs(got - tuned).max() <= TOL
    if fmt != "hf":  # and the sentence-transformers class loads the same weights
        st = SentenceTransformer(str(out), device="cpu") if kind == "retriever" else CrossEncoder(str(out), device="cpu")
        assert all(torch.equal(a, b) for a, b in zip(st[0].auto_model.state_dict().values(),
                                                     exported.state_dict().values(), strict=True))


def test_bitfit_added_biases_without_a_switch_export_as_a_peft_ir_module(variant: Variant, tiny_decoder_dir,
                                                                         tmp_path: Path) -> None:
    """Qwen3 has no switch for MLP biases: the export keeps the untouched base (no added bias in its weights) and
    the biases in peft_ir_tuning/, and loads back with them."""
    from safetensors import safe_open

    from peft_ir.retriever.config import EncoderSpec

    spec = EncoderSpec(model=str(tiny_decoder_dir("qwen3")), query_max_length=16, passage_max_length=32)
    train_dir = variant("retriever", "bitfit", spec=spec)
    out = tmp_path / "export"
    assert _export(train_dir, out, "sentence-transformers")["merged"] is False
    assert _types(out)[0] == CLASS_REF
    with safe_open(str(out / "model.safetensors"), "pt") as saved:
        assert not any(k.endswith(("o_proj.bias", "down_proj.bias")) for k in saved.keys())  # noqa: SIM118
    tuned, got = _tuned_and_exported("retriever", train_dir, load_model(out, device="cpu")[0].auto_model)
    assert np.abs(got - tuned).max() <= TOL


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_a_decoder_reranker_exports_with_the_eos_its_head_reads(family: str, variant: Variant, tiny_decoder_dir,
                                                                 tmp_path: Path) -> None:
    """peft-ir ends every pair with EOS for a decoder re-ranker (the head reads that token's state): the exported
    tokenizer must too, or every score moves."""
    from peft_ir.reranker.config import CrossEncoderSpec

    spec = CrossEncoderSpec(model=str(tiny_decoder_dir(family)), query_max_length=8, passage_max_length=24)
    train_dir = variant("reranker", "lora", spec=spec, lora_r=4)
    expected = peft_ir_scores(train_dir)
    for merge in (False, True):
        out = tmp_path / f"export-{merge}"
        _export(train_dir, out, "cross-encoder", merge)
        model = load_model(out, device="cpu")
        ids = model.tokenizer(*PAIRS[0])["input_ids"]
        assert ids[-1] == model.tokenizer.eos_token_id
        assert np.abs(model.predict(PAIRS) - expected).max() <= TOL


@pytest.mark.parametrize("kind", ["retriever", "reranker"])
def test_bitfit_with_aside_modules_exports_the_untouched_base(kind: str, variant: Variant, tmp_path: Path) -> None:
    """BitFit trains the base's biases in place: the exported base must hold them as they were before training, or
    the tuning's recorded base fingerprint no longer matches and the folder does not load."""
    train_dir = variant(kind, "bitfit", aside="layer", ar=4)
    out = tmp_path / "export"
    fmt = "sentence-transformers" if kind == "retriever" else "cross-encoder"
    assert _export(train_dir, out, fmt)["merged"] is False
    model = load_model(out, device="cpu")
    if kind == "retriever":
        got = np.concatenate([model.encode_query(QUERIES), model.encode_document(PASSAGES)])
        assert np.abs(got - peft_ir_vectors(train_dir)).max() <= TOL
    else:
        assert np.abs(model.predict(PAIRS) - peft_ir_scores(train_dir)).max() <= TOL
