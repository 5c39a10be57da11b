"""Model selection never ships a worse model: a checkpoint replaces the starting model only when it beats it on the
dev queries by a one-sided paired t-test (or a margin); otherwise the starting weights are restored and saved."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from scipy import stats

from peft_ir.errors import PeftIRError
from peft_ir.training.selection import KEPT_BEST, KEPT_LAST, KEPT_START, START_DIR, decide, describe, paired_p
from tiny_train import retriever_config

QIDS = [f"q{i}" for i in range(40)]


def _scores(values: list[float]) -> dict[str, float]:
    return dict(zip(QIDS, values))


# -- the decision, on hand-made per-query values -----------------------------------------------------------------

def test_a_consistent_gain_replaces_the_start() -> None:
    start = _scores([0.5 + 0.01 * (i % 5) for i in range(40)])
    better = {q: v + 0.05 + 0.01 * (i % 3) for i, (q, v) in enumerate(start.items())}  # every query gains
    sel = decide(start, better, alpha=0.05)
    assert sel.kept == KEPT_BEST and not sel.start_kept
    assert sel.p_value < 1e-6
    assert sel.start_dev == pytest.approx(sum(start.values()) / 40)
    assert sel.candidate_dev == pytest.approx(sum(better.values()) / 40)
    assert sel.summary()["final_dev"] == sel.candidate_dev


def test_the_p_value_is_the_one_sided_paired_t_test() -> None:
    """t = mean(d) / (sd(d) / sqrt(n)) over the per-query differences d; p = P(T_{n-1} > t)."""
    start = {"a": 0.2, "b": 0.5, "c": 0.4, "d": 0.9}
    cand = {"a": 0.4, "b": 0.45, "c": 0.7, "d": 0.95}
    d = [0.2, -0.05, 0.3, 0.05]
    mean = sum(d) / 4
    sd = (sum((x - mean) ** 2 for x in d) / 3) ** 0.5
    t = mean / (sd / 4 ** 0.5)
    assert paired_p(start, cand) == pytest.approx(float(stats.t.sf(t, df=3)), rel=1e-9)
    assert paired_p(cand, start) == pytest.approx(1 - float(stats.t.sf(t, df=3)), rel=1e-9)  # the other side


def test_a_higher_mean_that_is_noise_keeps_the_start() -> None:
    """+0.01 on average, but half the queries lose 0.2 and half gain 0.22: not evidence of a better model."""
    start = _scores([0.5] * 40)
    noisy = _scores([0.72 if i % 2 else 0.3 for i in range(40)])
    sel = decide(start, noisy, alpha=0.05)
    assert sel.candidate_dev > sel.start_dev
    assert sel.kept == KEPT_START and sel.p_value > 0.3
    assert sel.summary()["final_dev"] == sel.start_dev


def test_a_worse_candidate_keeps_the_start_and_equal_differences_are_decided_without_the_test() -> None:
    start = _scores([0.6] * 20 + [0.4] * 20)
    assert decide(start, {q: v - 0.1 * (i % 2) for i, (q, v) in enumerate(start.items())}).kept == KEPT_START
    same = decide(start, dict(start))
    assert same.kept == KEPT_START and same.p_value == 1.0                   # no difference anywhere
    shifted = decide(start, {q: v + 0.01 for q, v in start.items()}, candidate_name=KEPT_LAST)
    assert shifted.kept == KEPT_LAST and shifted.p_value == 0.0              # the same gain on every query


def test_a_margin_decides_instead_of_the_test_when_given() -> None:
    start = _scores([0.5] * 40)
    noisy = _scores([0.74 if i % 2 else 0.3 for i in range(40)])            # mean gain 0.02, p well above 0.05
    assert decide(start, noisy, margin=0.01).kept == KEPT_BEST
    assert decide(start, noisy, margin=0.03).kept == KEPT_START
    sel = decide(start, noisy, margin=0.01)
    assert sel.rule == "margin 0.01" and sel.p_value > 0.05                   # the p-value is still reported


def test_the_two_sides_must_cover_the_same_queries() -> None:
    with pytest.raises(PeftIRError, match="same dev queries"):
        decide({"a": 0.1, "b": 0.2}, {"a": 0.3, "c": 0.2})


def test_the_note_names_the_kept_model_both_means_and_the_p_value() -> None:
    from peft_ir.cli.flags import selection_note

    start = _scores([0.5] * 40)
    sel = decide(start, _scores([0.72 if i % 2 else 0.3 for i in range(40)]))
    summary = {"dev_metric": "eval_dev_nDCG@10", "best_dev": 0.51, **sel.summary()}
    note = selection_note(summary)
    assert note.startswith("kept the starting model")
    assert "0.5100" in note and "0.5000" in note and f"p = {sel.p_value:.3g}" in note
    assert selection_note({"dev_metric": None}) == "no dev queries: the last step's weights"
    assert describe({"dev_metric": "eval_m", "best_dev": 0.7}) == "best eval_m 0.7000"  # summaries from before


# -- settings --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "value", "flag"), [("selection_alpha", 0.0, "--selection-alpha"),
                                                     ("selection_alpha", 1.5, "--selection-alpha"),
                                                     ("selection_margin", -0.01, "--selection-margin")])
def test_bad_selection_settings_are_refused_before_anything_loads(key: str, value: float, flag: str,
                                                                  tmp_path: Path) -> None:
    from peft_ir.retriever.config import RetrieverTrainConfig
    from peft_ir.retriever.train import train_retriever

    cfg = RetrieverTrainConfig(train=str(tmp_path / "absent"), output=str(tmp_path / "o"), **{key: value})
    with pytest.raises(PeftIRError, match=flag):
        train_retriever(cfg)
    assert not (tmp_path / "o").exists()


def test_too_few_dev_queries_for_the_test_are_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    from peft_ir.training.args import ScheduleConfig

    with caplog.at_level(logging.WARNING, logger="peft_ir.training.args"):
        ScheduleConfig(train="t", output="o", dev_queries=10).check()
    assert "--dev-queries 10" in caplog.text and "at least 30" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="peft_ir.training.args"):
        ScheduleConfig(train="t", output="o", dev_queries=40).check()
        ScheduleConfig(train="t", output="o", dev_queries=0).check()
        ScheduleConfig(train="t", output="o", dev_queries=10, selection_margin=0.0).check()
    assert caplog.text == ""


# -- trainings where the rule decides --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def beir200(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The synthetic task with 200 training queries (40 held out for dev: enough for the paired test) and a
    word-overlap first-stage run of them."""
    from synthetic import make_beir, overlap_runs

    root = tmp_path_factory.mktemp("beir200")
    beir = make_beir(root / "beir", n_docs=240, n_train=200, n_test=10)
    return beir, overlap_runs(beir, root)["train"]


def _cfg(beir200: tuple[Path, Path], model: Path, out: Path, **kw):  # type: ignore[no-untyped-def]
    beir, run = beir200
    return retriever_config(beir, model, out, **({"dev_queries": 40, "dev_corpus": 200, "negatives_run": str(run),
                                                  "negatives_window": (1, 20), "num_negatives": 1, "max_steps": 24,
                                                  "eval_steps": 8, "save_steps": 8} | kw))


def _swapped(real):  # type: ignore[no-untyped-def]
    """A split whose *training* examples have their labels swapped: each query's positive is another query's, its
    own positive its negative; the dev set stays right."""
    from peft_ir.data.training import TrainingExample

    def split(examples, *args, **kw):  # type: ignore[no-untyped-def]
        train, dev = real(examples, *args, **kw)
        return [TrainingExample(e.query, train[(i + 1) % len(train)].positives, list(e.positives), e.query_id)
                for i, e in enumerate(train)], dev
    return split


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "tuning_weights.safetensors"))


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_that_hurts_keeps_the_starting_weights(beir200: tuple[Path, Path], tiny_bert_dir: Path,
                                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        cpu_only: None) -> None:
    import peft_ir.retriever.train as train_module
    from transformers import set_seed

    from peft_ir.retriever.encoder import BiEncoder
    from peft_ir.tuning import apply_tuning

    monkeypatch.setattr(train_module, "split_dev", _swapped(train_module.split_dev))
    out = tmp_path / "hurt"
    cfg = _cfg(beir200, tiny_bert_dir, out, lr=2e-2)
    s = train_module.train_retriever(cfg)
    assert s["kept"] == KEPT_START and s["selection_candidate"] == KEPT_BEST
    assert s["candidate_dev"] < s["start_dev"] and s["selection_p"] > 0.5
    assert s["final_dev"] == s["start_dev"] and s["selection"].startswith(KEPT_START)
    assert json.loads((out / "summary.json").read_text())["kept"] == KEPT_START
    saved = _weights(out / "adapter")
    # the initial weights, rebuilt independently: same seed, same model, same tuning
    set_seed(cfg.seed)
    tuned = apply_tuning(BiEncoder(cfg.encoder).hf_model, cfg.tuning)
    initial = {n: p.detach() for n, p in tuned.named_parameters() if p.requires_grad}
    assert _same(saved, initial)
    assert _same(saved, _weights(out / START_DIR / "adapter"))
    assert not _same(saved, _weights(Path(s["best_checkpoint"]) / "adapter"))  # the trained weights were there


def test_training_that_helps_keeps_the_best_checkpoint(beir200: tuple[Path, Path], tiny_bert_dir: Path,
                                                       tmp_path: Path, cpu_only: None) -> None:
    from peft_ir.retriever.train import train_retriever

    out = tmp_path / "help"
    s = train_retriever(_cfg(beir200, tiny_bert_dir, out))
    assert s["kept"] == KEPT_BEST and s["selection_p"] < 0.01
    assert s["candidate_dev"] == pytest.approx(s["best_dev"], abs=1e-9)   # the best checkpoint, evaluated again
    assert s["candidate_dev"] > s["start_dev"] + 0.03
    assert _same(_weights(out / "adapter"), _weights(Path(s["best_checkpoint"]) / "adapter"))
    assert not _same(_weights(out / "adapter"), _weights(out / START_DIR / "adapter"))
    # a margin the gain does not clear keeps the start instead, and says so
    s = train_retriever(_cfg(beir200, tiny_bert_dir, tmp_path / "margin", selection_margin=0.5))
    assert s["kept"] == KEPT_START and s["selection_rule"] == "margin 0.5"
    assert _same(_weights(tmp_path / "margin" / "adapter"), _weights(tmp_path / "margin" / START_DIR / "adapter"))


def test_a_resumed_run_reads_the_starting_point_and_reaches_the_same_decision(
        beir200: tuple[Path, Path], tiny_bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        cpu_only: None) -> None:
    import peft_ir.retriever.train as train_module

    straight = tmp_path / "straight"
    a = train_module.train_retriever(_cfg(beir200, tiny_bert_dir, straight))
    killed = tmp_path / "killed"  # the folder of a run killed after checkpoint 16
    shutil.copytree(straight / "checkpoints" / "checkpoint-16", killed / "checkpoints" / "checkpoint-16")
    shutil.copytree(straight / START_DIR, killed / START_DIR)
    evaluations: list[str] = []
    real = train_module.RetrieverTask.dev_per_query

    def counted(task):  # type: ignore[no-untyped-def]
        evaluations.append("dev")
        return real(task)

    monkeypatch.setattr(train_module.RetrieverTask, "dev_per_query", counted)
    b = train_module.train_retriever(_cfg(beir200, tiny_bert_dir, killed, resume=True))
    assert b["resumed_from"].endswith("checkpoint-16")
    assert evaluations == ["dev"]   # the candidate only: the starting model's values were read, not recomputed
    for key in ("kept", "start_dev", "candidate_dev", "selection_p"):
        assert b[key] == pytest.approx(a[key], abs=1e-6), key
    assert a["kept"] == KEPT_BEST
    for k, v in _weights(straight / "adapter").items():
        torch.testing.assert_close(v, _weights(killed / "adapter")[k], atol=1e-5, rtol=1e-4)


def test_the_reranker_keeps_its_start_when_training_hurts(synthetic_beir: Path, synthetic_runs: dict,
                                                           tiny_bert_dir: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch, cpu_only: None) -> None:
    """The re-ranker's dev set re-ranks each dev query's first-stage top hits; swapped labels (and a high rate)
    leave every checkpoint below the start there, and the start's weights are what is saved."""
    import peft_ir.reranker.training as training
    from peft_ir.reranker.config import CrossEncoderSpec, RerankerTrainConfig
    from peft_ir.tuning import TuningConfig

    monkeypatch.setattr(training, "split_examples", _swapped(training.split_examples))
    out = tmp_path / "ce"
    s = training.train_reranker(RerankerTrainConfig(
        train=str(synthetic_beir), output=str(out), negatives_run=str(synthetic_runs["train"]),
        negatives_window=(1, 20), negatives_pool=10, cross_encoder=CrossEncoderSpec(
            model=str(tiny_bert_dir), query_max_length=8, passage_max_length=24),
        tuning=TuningConfig(method="iaa-l", r=4, ar=4, train_pooler=True), group_size=4, batch_size=8,
        max_steps=24, eval_steps=8, save_steps=8, logging_steps=4, dev_queries=30, dev_candidates=10, lr=2e-2,
        warmup_ratio=0.0, progress=False))
    assert s["kept"] == KEPT_START and s["final_dev"] == s["start_dev"]
    assert s["candidate_dev"] < s["start_dev"]     # the best checkpoint the Trainer found is worse than the start
    assert _same(_weights(out / "adapter"), _weights(out / START_DIR / "adapter"))
    assert not _same(_weights(out / "adapter"), _weights(Path(s["best_checkpoint"]) / "adapter"))
