"""Gated cross attention (reranker/gated.py): with its gates closed the re-ranker scores exactly as the bi-encoder it
is built on, with them open it is joint attention over the pair; the gates train under every method, save and reload,
and what the layout cannot take is refused before a model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from peft_ir.errors import PeftIRError
from peft_ir.reranker import gated
from peft_ir.reranker.config import COSINE_SCALE, CrossEncoderSpec, RerankerTrainConfig
from peft_ir.reranker.model import CrossEncoder
from peft_ir.tuning import TuningConfig
from tests.tiny_models import tiny_config

QUERIES = ["alpha beta gamma", "river stone", "light metal glass paper water fire earth wind north south east"]
PASSAGES = ["alpha beta gamma delta", "cloud tree north south east west red blue green black alpha beta", "fire"]


def _spec(model: Path | str, **kw) -> CrossEncoderSpec:  # type: ignore[no-untyped-def]
    return CrossEncoderSpec(**{"model": str(model), "query_max_length": 16, "passage_max_length": 24,
                               "head": "cosine", "cross_attention": "gated", **kw})


def _set_gates(ce: CrossEncoder, value: float) -> None:
    with torch.no_grad():
        for module in ce.model.modules():
            if isinstance(module, gated.CrossGate):
                module.weight.fill_(value)


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> dict[str, Path]:
    """A tiny random model of each supported family with MiniLM's tokenizer (RoBERTa's positions start at 2)."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path)
    out = {}
    for family in gated.SUPPORTED:
        torch.manual_seed(0)
        folder = tmp_path_factory.mktemp(f"gated-{family}")
        AutoModel.from_config(tiny_config(family, vocab_size=tok.vocab_size)).save_pretrained(folder)
        tok.save_pretrained(folder)
        out[family] = folder
    return out


@pytest.mark.parametrize("family", sorted(gated.SUPPORTED))
def test_closed_gates_score_exactly_as_the_bi_encoder(family: str, family_dirs: dict[str, Path]) -> None:
    """20 x the cosine of the bi-encoder's (sentence-transformers, mean pooling) query and passage embeddings, pair by
    pair, batched with padding; a full-attention cosine re-ranker on the same weights scores otherwise."""
    from peft_ir.retriever.config import EncoderSpec
    from peft_ir.retriever.encoder import BiEncoder

    folder = family_dirs[family]
    scores = CrossEncoder(_spec(folder), device="cpu").score(QUERIES, PASSAGES, batch_size=2)
    bi = BiEncoder(EncoderSpec(model=str(folder), pooling="mean"), device="cpu")
    q = torch.nn.functional.normalize(torch.as_tensor(bi.encode_queries(QUERIES)), dim=-1)
    p = torch.nn.functional.normalize(torch.as_tensor(bi.encode_passages(PASSAGES)), dim=-1)
    expected = (COSINE_SCALE * (q * p).sum(-1)).tolist()
    assert scores == pytest.approx(expected, abs=1e-4)
    full = CrossEncoder(_spec(folder, cross_attention="full"), device="cpu").score(QUERIES, PASSAGES)
    assert max(abs(a - b) for a, b in zip(full, expected)) > 1e-2


def test_open_gates_are_joint_attention_over_the_pair(family_dirs: dict[str, Path]) -> None:
    """Gates at 1: the pair's layout (each text in its template, positions restarting, token type 0) through plain
    sdpa attention over every token; half-open gates score between neither."""
    from transformers import AutoModel

    folder = family_dirs["bert"]
    ce = CrossEncoder(_spec(folder), device="cpu")
    closed = ce.score(QUERIES, PASSAGES, batch_size=2)
    _set_gates(ce, 1.0)
    opened = ce.score(QUERIES, PASSAGES, batch_size=2)
    plain = AutoModel.from_pretrained(folder, attn_implementation="sdpa").eval()
    for (ids, _, segments), score in zip(ce.pair_ids(QUERIES, PASSAGES), opened):
        seg = torch.tensor([segments])
        with torch.no_grad():
            # the mask given: without one, transformers reads restarting positions as two packed texts and blocks
            # attention between them
            states = plain(input_ids=torch.tensor([ids]), attention_mask=torch.ones_like(seg),
                           token_type_ids=torch.zeros_like(seg),
                           position_ids=gated.restarted_positions(seg, 0)).last_hidden_state[0]
        q, p = states[seg[0] == 1].mean(0), states[seg[0] == 2].mean(0)
        assert score == pytest.approx(float(COSINE_SCALE * torch.cosine_similarity(q, p, dim=0)), abs=1e-4)
    _set_gates(ce, 0.5)
    half = ce.score(QUERIES, PASSAGES, batch_size=2)
    assert all(min(abs(h - c), abs(h - o)) > 1e-4 for h, c, o in zip(half, closed, opened))


def test_positions_restart_at_each_text() -> None:
    segments = torch.tensor([[1, 1, 1, 2, 2, 0], [1, 1, 2, 2, 2, 2]])
    assert gated.restarted_positions(segments, 0).tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 0, 1, 2, 3]]
    assert gated.restarted_positions(segments, 2).tolist() == [[2, 3, 4, 2, 3, 2], [2, 3, 2, 3, 4, 5]]


def test_the_gates_train_save_and_reload(synthetic_beir: Path, synthetic_runs: dict, tiny_ce_dir: Path,
                                         tmp_path: Path) -> None:
    """Under IAA-L the gates train whole (the head's share: one per head and layer), open, are saved with the method's
    weights, and the reloaded model reproduces the kept model's dev metric; the budget names them."""
    from peft_ir.reranker.training import dev_ndcg, held_out_dev, train_reranker
    from peft_ir.tuning import describe

    out = tmp_path / "gated"
    cfg = RerankerTrainConfig(train=str(synthetic_beir), output=str(out), negatives_run=str(synthetic_runs["train"]),
                              negatives_window=(1, 20), negatives_pool=10, cross_encoder=_spec(tiny_ce_dir),
                              tuning=TuningConfig(method="iaa-l", r=4, ar=4), group_size=4, batch_size=8,
                              max_steps=12, eval_steps=6, save_steps=6, logging_steps=1, dev_queries=8,
                              dev_candidates=8, lr=1e-2, warmup_ratio=0.0, progress=False, selection_alpha=1.0)
    s = train_reranker(cfg)
    gates = 2 * 2  # layers x heads of tiny_ce_dir
    assert s["head_share"] * s["total"] == pytest.approx(gates)
    weights = load_file(str(out / "adapter" / "tuning_weights.safetensors"))
    saved = {k: v for k, v in weights.items() if k.endswith("cross_gate.weight")}
    assert len(saved) == 2 and all(v.abs().min() > 0 for v in saved.values())  # every gate moved off 0
    assert sum(t.numel() for t in weights.values()) == s["trainable"]
    reloaded = CrossEncoder(cfg.cross_encoder, adapter=out / "adapter", device="cpu")
    assert dev_ndcg(reloaded, held_out_dev(cfg)) == pytest.approx(s["final_dev"], abs=1e-6)
    text = describe(reloaded.model)
    assert "cross-encoder (gated cross attention)" in text
    assert "cross-attention gates (always train)" in text and "encoder.layer.{0..1}.attention.self.cross_gate" in text
    assert json.loads((out / "cross_encoder.json").read_text())["cross_attention"] == "gated"
    # the model without gates cannot take the adapter: refused, not silently mis-scored
    with pytest.raises(PeftIRError, match="trained with gated cross attention: give --cross-attention gated"):
        CrossEncoder(_spec(tiny_ce_dir, cross_attention="full"), adapter=out / "adapter", device="cpu")
    # export writes sequence-classification models only, and says how to load this one
    from peft_ir.export.source import read_trained

    with pytest.raises(PeftIRError, match="--head cosine --cross-attention gated"):
        read_trained(out)


def test_lora_carries_the_gates_in_its_checkpoint(tiny_ce_dir: Path, tmp_path: Path) -> None:
    from peft_ir.tuning import apply_tuning, load_tuned, save_tuned

    ce = CrossEncoder(_spec(tiny_ce_dir), device="cpu")
    apply_tuning(ce.model, TuningConfig(method="lora", lora_r=2))
    _set_gates(ce, 0.3)
    assert all(m.weight.requires_grad for m in ce.model.modules() if isinstance(m, gated.CrossGate))
    expected = ce.score(QUERIES, PASSAGES)
    save_tuned(ce.model, tmp_path / "lora")
    again = CrossEncoder(_spec(tiny_ce_dir), adapter=tmp_path / "lora", device="cpu")
    assert again.score(QUERIES, PASSAGES) == pytest.approx(expected, abs=1e-6)
    # peft alone loads it too (the gates as modules_to_save, which wraps them) onto a gated base
    from peft import PeftModel

    plain = CrossEncoder(_spec(tiny_ce_dir), device="cpu")
    plain.model = PeftModel.from_pretrained(plain.model, str(tmp_path / "lora"))
    assert plain.score(QUERIES, PASSAGES) == pytest.approx(expected, abs=1e-6)
    assert CrossEncoder(_spec(tiny_ce_dir), device="cpu").fingerprint() != again.fingerprint()


@pytest.mark.parametrize(("change", "message"), [
    ({"head": "classifier"}, "gated needs head: cosine"),
    ({"attn_implementation": "eager"}, "drop attn_implementation=eager"),
])
def test_what_the_layout_cannot_take_is_refused(change: dict, message: str, tmp_path: Path) -> None:
    spec = CrossEncoderSpec(head="cosine", cross_attention="gated")
    for key, value in change.items():
        setattr(spec, key, value)
    cfg = RerankerTrainConfig(train=str(tmp_path), output=str(tmp_path / "out"), cross_encoder=spec)
    with pytest.raises(PeftIRError, match=message):
        cfg.check()
    with pytest.raises(PeftIRError, match=message):
        CrossEncoder(spec, device="cpu")


def test_prefixes_and_unsupported_families_are_refused(tiny_model_dirs_for_gated: dict, tmp_path: Path) -> None:
    cfg = RerankerTrainConfig(train=str(tmp_path), output=str(tmp_path / "out"),
                              cross_encoder=CrossEncoderSpec(head="cosine", cross_attention="gated"),
                              tuning=TuningConfig(method="prefix", prefix_len=2))
    with pytest.raises(PeftIRError, match="prefix's prefixes cannot enter"):
        cfg.check()
    with pytest.raises(PeftIRError, match="gated supports model types bert, .*; this model is 'distilbert'"):
        CrossEncoder(_spec(tiny_model_dirs_for_gated["distilbert"]), device="cpu")


@pytest.fixture(scope="module")
def tiny_model_dirs_for_gated(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> dict[str, Path]:
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path)
    folder = tmp_path_factory.mktemp("gated-distilbert")
    AutoModel.from_config(tiny_config("distilbert", vocab_size=tok.vocab_size)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return {"distilbert": folder}
