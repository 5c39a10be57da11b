"""The cosine head: a re-ranker that is the bare encoder, scoring a pair by 20 x the cosine of its mean query-token and
mean passage-token states; it trains, reloads exactly, sizes its budget without a head, and export refuses it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from peft_ir.errors import PeftIRError
from peft_ir.reranker.config import COSINE_SCALE, CrossEncoderSpec, RerankerTrainConfig
from peft_ir.reranker.model import CrossEncoder
from peft_ir.reranker.training import train_reranker
from peft_ir.tuning import TuningConfig

QUERIES = ["alpha beta gamma", "river stone", "light metal glass paper water fire earth wind north south east"]
PASSAGES = ["alpha beta gamma delta", "cloud tree north south east west red blue green black alpha beta", "fire"]


def _spec(model: Path, **kw) -> CrossEncoderSpec:  # type: ignore[no-untyped-def]
    return CrossEncoderSpec(model=str(model), query_max_length=8, passage_max_length=24, head="cosine", **kw)


def test_the_score_is_the_scaled_cosine_of_the_mean_segment_states(tiny_bert_dir: Path) -> None:
    """By hand: each pair alone through the bare encoder, its query tokens (between [CLS] and the first [SEP]) and
    passage tokens (before the last [SEP]) averaged; batched scoring with padding gives the same."""
    ce = CrossEncoder(_spec(tiny_bert_dir), device="cpu")
    assert type(ce.model).__name__ == "BertModel" and not ce.pooler_pretrained  # no task head at all
    tok = ce.tokenizer
    scores = ce.score(QUERIES, PASSAGES, batch_size=2)
    for q, p, score in zip(QUERIES, PASSAGES, scores):
        q_ids = tok(q, add_special_tokens=False, truncation=True, max_length=8)["input_ids"]
        p_ids = tok(p, add_special_tokens=False, truncation=True, max_length=24)["input_ids"]
        ids = [tok.cls_token_id, *q_ids, tok.sep_token_id, *p_ids, tok.sep_token_id]
        types = [0] * (len(q_ids) + 2) + [1] * (len(p_ids) + 1)
        with torch.no_grad():
            states = ce.model(input_ids=torch.tensor([ids]), token_type_ids=torch.tensor([types])).last_hidden_state[0]
        q_vec = states[1:1 + len(q_ids)].mean(0)
        p_vec = states[len(q_ids) + 2:-1].mean(0)
        expected = COSINE_SCALE * torch.nn.functional.cosine_similarity(q_vec, p_vec, dim=0)
        assert score == pytest.approx(float(expected), abs=1e-5)
    assert len(set(scores)) == 3 and all(-COSINE_SCALE <= s <= COSINE_SCALE for s in scores)


def test_the_head_names_its_own_score_cache(tiny_bert_dir: Path) -> None:
    classifier = CrossEncoder(CrossEncoderSpec(model=str(tiny_bert_dir)), device="cpu")
    cosine = CrossEncoder(CrossEncoderSpec(model=str(tiny_bert_dir), head="cosine"), device="cpu")
    assert classifier.fingerprint() != cosine.fingerprint()


def _cfg(data: Path, run: Path, model: Path, out: Path, **kw) -> RerankerTrainConfig:  # type: ignore[no-untyped-def]
    base = dict(train=str(data), output=str(out), negatives_run=str(run), negatives_window=(1, 20), negatives_pool=10,
                cross_encoder=_spec(model), tuning=TuningConfig(method="iaa-l", r=4, ar=4), group_size=4,
                batch_size=8, max_steps=40, eval_steps=20, save_steps=20, logging_steps=1, dev_queries=8,
                dev_candidates=8, lr=1e-2, warmup_ratio=0.0, progress=False)
    base.update(kw)
    return RerankerTrainConfig(**base)  # type: ignore[arg-type]


def test_a_cosine_reranker_trains_without_a_head_and_reloads_exactly(synthetic_beir: Path, synthetic_runs: dict,
                                                                   tiny_ce_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cos"
    cfg = _cfg(synthetic_beir, synthetic_runs["train"], tiny_ce_dir, out)
    s = train_reranker(cfg)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 40 and sum(losses[-8:]) / 8 < 0.9 * sum(losses[:8]) / 8, losses
    # nothing but the method's modules trains: no head, no pooler
    assert s["head_share"] == 0 and s["pooler_share"] == 0 and s["train_pooler"] is False
    weights = load_file(str(out / "adapter" / "tuning_weights.safetensors"))
    assert sum(t.numel() for t in weights.values()) == s["trainable"]
    assert not any("classifier" in k or "pooler" in k for k in weights)
    assert json.loads((out / "cross_encoder.json").read_text())["head"] == "cosine"
    # the saved adapter on a fresh bare encoder reproduces the kept model's dev metric
    from peft_ir.reranker.training import dev_ndcg, held_out_dev

    reloaded = CrossEncoder(cfg.cross_encoder, adapter=out / "adapter", device="cpu")
    assert dev_ndcg(reloaded, held_out_dev(cfg)) == pytest.approx(s["final_dev"], abs=1e-6)
    # a classifier cannot take the bare encoder's adapter: refused, not silently mis-scored
    with pytest.raises(PeftIRError, match="made for a BertModel .* is a BertForSequenceClassification.*cross_encoder"
                                          r"\.json says it was trained with the cosine head: give --head cosine"):
        CrossEncoder(CrossEncoderSpec(model=str(tiny_ce_dir), query_max_length=8, passage_max_length=24),
                     adapter=out / "adapter", device="cpu")
    # export writes sequence-classification models only: it refuses and says how to load it instead
    from peft_ir.export.source import read_trained

    with pytest.raises(PeftIRError, match="cosine head.*--head cosine"):
        read_trained(out)
    # as a teacher, the training output is scored with its recorded head and lengths
    from peft_ir.teacher.config import TeacherConfig
    from peft_ir.teacher.teachers import Block, load_teacher, resolve_teacher

    source = resolve_teacher(TeacherConfig(teacher=str(out)))
    assert source.spec["head"] == "cosine" and source.spec["passage_max_length"] == 24
    block = Block("q", QUERIES[0], [(str(i), p) for i, p in enumerate(PASSAGES)])
    expected = reloaded.score([QUERIES[0]] * 3, PASSAGES)
    assert load_teacher(source).score([block])[0] == pytest.approx(expected, abs=1e-5)


def test_rerank_scores_an_adapter_as_its_training_recorded(synthetic_beir: Path, synthetic_runs: dict,
                                                           tiny_ce_dir: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    """`peft-ir rerank --adapter` takes the head, model and lengths from the cross_encoder.json beside the adapter
    for every flag not given; a flag given on the command line wins (and a wrong head is refused, not mis-scored)."""
    from peft_ir.cli import main
    from peft_ir.data import read_run

    out = tmp_path / "cos"
    cfg = _cfg(synthetic_beir, synthetic_runs["train"], tiny_ce_dir, out, max_steps=4, eval_steps=2, save_steps=2)
    train_reranker(cfg)
    run = tmp_path / "reranked.trec"
    base = ["rerank", "--run", str(synthetic_runs["test"]), "--topics", str(synthetic_beir), "--corpus",
            str(synthetic_beir), "--adapter", str(out / "adapter"), "--hits", "5"]
    assert main([*base, "--output", str(run)]) == 0
    said = capsys.readouterr().out
    assert f"from {out / 'cross_encoder.json'}: model={str(tiny_ce_dir)!r}" in said
    assert "passage_max_length=24" in said and "head='cosine'" in said
    # the same scores as the trained model loaded by hand with its spec
    from peft_ir.reranker.rerank import load_inputs

    encoder = CrossEncoder(cfg.cross_encoder, adapter=out / "adapter", device="cpu")
    _, queries, passages = load_inputs(synthetic_runs["test"], synthetic_beir, synthetic_beir, 5)
    reranked = read_run(run)
    qid = sorted(reranked)[0]
    docs = sorted(reranked[qid])
    by_hand = encoder.score([queries[qid]] * len(docs), [passages[d] for d in docs])
    assert [reranked[qid][d] for d in docs] == pytest.approx(by_hand, abs=1e-5)
    # a checkpoint's adapter is scored with the spec its training output recorded
    checkpoint = sorted((out / "checkpoints").glob("checkpoint-*"))[0]
    assert main([*base[:-4], "--adapter", str(checkpoint / "adapter"), "--hits", "5",
                 "--output", str(tmp_path / "ckpt.trec")]) == 0
    assert f"from {out / 'cross_encoder.json'}: model={str(tiny_ce_dir)!r}" in capsys.readouterr().out
    # a flag given wins over the file: the classifier head does not fit the bare encoder's adapter
    assert main([*base, "--head", "classifier", "--output", str(tmp_path / "x.trec")]) != 0
    assert "give --head cosine" in capsys.readouterr().err
    # a file that is not a spec is refused naming file and field, before any model loads
    (out / "cross_encoder.json").write_text(json.dumps({"head": "cosine", "heads": 2}))
    assert main([*base, "--output", str(tmp_path / "y.trec")]) == 2
    assert "cross_encoder.json: field 'heads'" in capsys.readouterr().err


def test_a_run_config_sizes_the_cosine_rerankers_budget_on_the_bare_encoder(minilm_path: str) -> None:
    """The structure a section's budget is sized on: the bare encoder for a retriever and a cosine re-ranker (the same
    sizes as a retriever's), the model with its head for a classifier."""
    from peft_ir.experiment.config import RerankerSection, RetrieverSection
    from peft_ir.experiment.tuning import has_task_head, resolve_tuning

    cosine = RerankerSection(method="iaa-l", budget="0.5%", head="cosine")
    classifier = RerankerSection(method="iaa-l", budget="0.5%")
    retriever = RetrieverSection(method="iaa-l", budget="0.5%")
    assert [has_task_head(s) for s in (cosine, classifier, retriever)] == [False, True, False]
    assert resolve_tuning(cosine, seed=1) == resolve_tuning(retriever, seed=1)


def test_a_head_learning_rate_without_a_head_is_refused(tmp_path: Path) -> None:
    cfg = RerankerTrainConfig(train=str(tmp_path), output=str(tmp_path / "out"), head_lr=1e-3,
                              cross_encoder=CrossEncoderSpec(head="cosine"))
    with pytest.raises(PeftIRError, match="the cosine head has no weights of its own"):
        cfg.check()
