"""The loss registry: each loss equals its hand-computed value on one fixed batch, for every model kind it trains;
wrong choices are refused naming the choices; teacher scores stay aligned with the sampled negatives."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from peft_ir.errors import PeftIRError
from peft_ir.training.losses import BI_ENCODER, CROSS_ENCODER, LOSSES, make_loss

REPO = Path(__file__).resolve().parents[2]

# One fixed batch: 2 queries x 3 passages [positive, negative_1, negative_2].
# Model scores s, teacher scores t. Query 2's teacher scores are its model scores plus 1.
S = [[2.0, 1.0, 0.0], [0.0, 1.0, -1.0]]
T = [[3.0, 1.0, 1.0], [1.0, 2.0, 0.0]]

# Worked out by hand (e = 2.718282):
# lce  = mean(log(e^2 + e + 1) - 2, log(1 + e + 1/e) - 0) = mean(0.407606, 1.407606)
LCE = 0.907606
# bce  = mean over the 6 pairs of softplus(-s) (positives) or softplus(s) (negatives)
#      = (sp(-2) + sp(1) + sp(0) + sp(0) + sp(1) + sp(-1)) / 6 = (0.126928 + 1.313262 + 0.693147 + 0.693147
#        + 1.313262 + 0.313262) / 6
BCE = 0.742168
# margin-mse: query 1's margins s: 2-1, 2-0 = 1, 2 and t: 3-1, 3-1 = 2, 2, errors -1, 0; query 2's s: -1, 1 and
# t: -1, 1, errors 0, 0; mean of the squares (1 + 0 + 0 + 0) / 4
MARGIN_MSE = 0.25
# kl at T = 1: query 1: p_t = (e^2, 1, 1) / (e^2 + 2) = (0.786986, 0.106507, 0.106507),
#   p_s = (e^2, e, 1) / (e^2 + e + 1) = (0.665241, 0.244728, 0.090031),
#   KL = 0.786986 ln(0.786986/0.665241) + 0.106507 ln(0.106507/0.244728) + 0.106507 ln(0.106507/0.090031) = 0.061554;
#   query 2: t = s + 1, and a softmax ignores a shift: KL = 0. Mean over the queries:
KL_T1 = 0.030777
# kl at T = 2: query 1: p_t = softmax(1.5, .5, .5) = (0.576117, 0.211942, 0.211942),
#   p_s = softmax(1, .5, 0) = (0.506480, 0.307196, 0.186324), KL = 0.022854; times T^2 = 4: 0.091417;
#   query 2: 0. Mean over the queries:
KL_T2 = 0.045708
# infonce (bi-encoder, in-batch negatives): each query scores all 6 passages of the batch; query 1:
#   (2, 1, 0) with its own and (0, 0, 0) with query 2's, query 2: (0, 1, -1) with its own and (0, 0, 0) with
#   query 1's: mean(log(e^2 + e + 4) - 2, log(4 + e + 1/e) - 0) = mean(0.646695, 1.958144)
INFONCE = 1.302419


def _batch():  # type: ignore[no-untyped-def]
    import torch

    labels = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    return torch.tensor(S).view(-1), labels, torch.tensor(T)


@pytest.mark.parametrize("name, temperature, expected", [
    ("lce", 1.0, LCE), ("bce", 1.0, BCE), ("margin-mse", 1.0, MARGIN_MSE), ("kl", 1.0, KL_T1), ("kl", 2.0, KL_T2)])
def test_cross_encoder_losses_equal_their_hand_computed_values(name: str, temperature: float, expected: float) -> None:
    logits, labels, teacher = _batch()
    got = make_loss(name, CROSS_ENCODER, temperature)(logits, labels, teacher).item()
    assert got == pytest.approx(expected, abs=2e-6)


def _embeddings():  # type: ignore[no-untyped-def]
    """Query and passage vectors whose dot products, times the scale 2 (temperature 0.5), are S; every dot product of a
    query with the other query's passages is 0."""
    import torch

    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    pos = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    neg_1 = torch.tensor([[0.5, 0.0], [0.0, 0.5]])
    neg_2 = torch.tensor([[0.0, 0.0], [0.0, -0.5]])
    return [q, pos, neg_1, neg_2]


@pytest.mark.parametrize("name, temperature, expected", [
    ("infonce", 1.0, INFONCE), ("margin-mse", 1.0, MARGIN_MSE), ("kl", 1.0, KL_T1), ("kl", 2.0, KL_T2)])
def test_bi_encoder_losses_equal_the_same_hand_computed_values(name: str, temperature: float, expected: float) -> None:
    """The bi-encoder's score is its similarity / temperature (here dot products / 0.5) in every loss; with the same
    scores the sentence-transformers modules give the numbers the cross-encoder forms give."""
    import torch

    loss = make_loss(name, BI_ENCODER, temperature).bi_encoder_loss(None, cosine=False, scale=1 / 0.5)
    got = loss.compute_loss_from_embeddings(_embeddings(), torch.tensor(T)).item()
    assert got == pytest.approx(expected, abs=2e-6)


def test_bi_encoder_losses_score_with_the_similarity_search_uses() -> None:
    from sentence_transformers.util import cos_sim, pairwise_cos_sim, pairwise_dot_score

    assert make_loss("infonce", BI_ENCODER).bi_encoder_loss(None, cosine=True, scale=20).similarity_fct is cos_sim
    for name in ("margin-mse", "kl"):
        for cosine, fn in ((True, pairwise_cos_sim), (False, pairwise_dot_score)):
            sim = make_loss(name, BI_ENCODER).bi_encoder_loss(None, cosine=cosine, scale=20).similarity_fct
            assert sim.fn is fn and sim.scale == 20


def test_each_loss_says_what_it_trains_and_whether_it_needs_a_teacher() -> None:
    assert list(LOSSES) == ["infonce", "lce", "bce", "margin-mse", "kl"]
    assert {n: (c.kinds, c.needs_teacher) for n, c in LOSSES.items()} == {
        "infonce": ((BI_ENCODER,), False), "lce": ((CROSS_ENCODER,), False), "bce": ((CROSS_ENCODER,), False),
        "margin-mse": ((BI_ENCODER, CROSS_ENCODER), True), "kl": ((BI_ENCODER, CROSS_ENCODER), True)}


@pytest.mark.parametrize("name, kind, message", [
    ("bce", BI_ENCODER, r"^loss 'bce' does not train a bi-encoder; choose one of infonce, margin-mse, kl$"),
    ("lce", BI_ENCODER, r"^loss 'lce' does not train a bi-encoder \(infonce is the bi-encoder's form .*\); "
                        r"choose one of infonce, margin-mse, kl$"),
    ("infonce", CROSS_ENCODER, r"^loss 'infonce' does not train a cross-encoder \(lce is its group-softmax form "
                               r"for cross-encoders\); choose one of lce, bce, margin-mse, kl$"),
    ("hinge", CROSS_ENCODER, r"^unknown loss 'hinge'; choose one of lce, bce, margin-mse, kl$")])
def test_a_loss_the_kind_does_not_train_is_refused_naming_the_choices(name: str, kind: str, message: str) -> None:
    with pytest.raises(PeftIRError, match=message):
        make_loss(name, kind)  # type: ignore[arg-type]


def test_distillation_without_teacher_scores_in_the_batch_is_refused() -> None:
    logits, labels, _ = _batch()
    with pytest.raises(PeftIRError, match="margin-mse needs teacher scores"):
        make_loss("margin-mse", CROSS_ENCODER)(logits, labels)


def _options(*path: str) -> dict:  # type: ignore[type-arg]
    from peft_ir.cli import build_parser

    parser = build_parser()
    for name in path:
        parser = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices[name]
    return {a.dest: a for a in parser._actions if a.option_strings}


def test_cli_loss_choices_come_from_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    from peft_ir.training import losses

    assert _options("train", "retriever")["loss"].choices == ("infonce", "margin-mse", "kl")
    assert _options("train", "reranker")["loss"].choices == ("lce", "bce", "margin-mse", "kl")

    class Hinge(losses.Loss):
        name, kinds = "hinge", (losses.CROSS_ENCODER,)

    monkeypatch.setitem(losses.LOSSES, "hinge", Hinge)
    assert "hinge" in _options("train", "reranker")["loss"].choices
    assert "hinge" not in _options("train", "retriever")["loss"].choices


def test_the_cli_builds_its_loss_choices_without_torch() -> None:
    code = ("import sys; from peft_ir.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})
    assert done.stdout.strip() == "[]"


# -- refused before the model is loaded ----------------------------------------------------------------------------
def _flag_file(tmp_path: Path) -> Path:
    path = tmp_path / "flag.jsonl"
    path.write_text(json.dumps({"query": "q", "pos": ["p"], "neg": ["n"]}) + "\n")
    return path


@pytest.mark.parametrize("what", ["retriever", "reranker"])
@pytest.mark.parametrize("loss", ["margin-mse", "kl"])
def test_distillation_on_data_without_teacher_scores_is_refused_before_the_model_loads(
        what: str, loss: str, synthetic_beir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The model named does not exist: a refusal that came after loading it would name the model instead."""
    from peft_ir.cli import main

    flag = _flag_file(tmp_path)
    for train, why in ((flag, f"{flag} is a flag training file without them"),
                       (synthetic_beir, f"the BEIR folder {synthetic_beir} has none")):
        out = tmp_path / f"{what}-{loss}"
        code = main(["train", what, "--train", str(train), "--output", str(out), "--loss", loss,
                     "--model", str(tmp_path / "no-such-model")])
        err = capsys.readouterr().err
        assert code == 2 and f"loss {loss} distils teacher scores, and {why}" in err, err
        assert "scored training file" in err and not out.exists()


def test_retriever_distillation_settings_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    from peft_ir.retriever.config import RetrieverTrainConfig

    scored = tmp_path / "scored.jsonl"
    scored.write_text(json.dumps({"query": "q", "passages": [{"docid": "a", "text": "t", "label": 1, "score": 2},
                                                             {"docid": "b", "text": "u", "label": 0, "score": 1}]})
                      + "\n")
    RetrieverTrainConfig(train=str(scored), output="o", loss="kl").check()  # a scored file: fine
    with pytest.raises(PeftIRError, match="loss kl compares each positive with its negatives: num_negatives must be"):
        RetrieverTrainConfig(train=str(scored), output="o", loss="kl", num_negatives=0).check()
    with pytest.raises(PeftIRError, match=r"cache_mini_batch \(GradCache\) applies to the infonce loss only"):
        RetrieverTrainConfig(train=str(scored), output="o", loss="margin-mse", cache_mini_batch=2).check()
    with pytest.raises(PeftIRError, match="--distill-temperature must be a positive number; got 0"):
        RetrieverTrainConfig(train=str(scored), output="o", loss="kl", distill_temperature=0).check()
    with pytest.raises(PeftIRError, match="loss 'lce' does not train a bi-encoder"):
        RetrieverTrainConfig(train=str(scored), output="o", loss="lce").check()


def test_a_scored_file_is_required_by_the_experiment_check(tmp_path: Path, synthetic_beir: Path, tiny_bert_dir: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """`peft-ir run --check` names the section's loss and the file."""
    monkeypatch.syspath_prepend(str(REPO / "tests" / "experiment"))
    from tiny import tiny_config, write_yaml

    from peft_ir.experiment import ConfigError, load_config

    flag = _flag_file(tmp_path)
    cfg = tiny_config(synthetic_beir, tiny_bert_dir, tmp_path / "runs", first_stage="bm25", retriever=None,
                      data={"beir": str(synthetic_beir), "train": str(flag)},
                      reranker={"negatives": None, "loss": "kl"})
    with pytest.raises(ConfigError, match=rf"'reranker.loss': loss kl distils teacher scores, and {flag} is a flag"):
        load_config(write_yaml(tmp_path / "x.yaml", cfg))


# -- teacher scores follow the sampled negatives --------------------------------------------------------------------
def _scored_examples():  # type: ignore[no-untyped-def]
    from peft_ir.data import TrainingExample

    return [TrainingExample(f"query {q}", [f"pos {q}.{j}" for j in range(2)], [f"neg {q}.{i}" for i in range(6)],
                            f"q{q}", positive_scores=[10.0 * q + j for j in range(2)],
                            negative_scores=[10.0 * q + 0.1 * (i + 1) for i in range(6)]) for q in range(3)]


def _score_of(text: str) -> float:
    kind, rest = text.split(" ")
    q, i = map(int, rest.split("."))
    return 10.0 * q + (i if kind == "pos" else 0.1 * (i + 1))


def test_bi_encoder_rows_carry_the_scores_of_their_sampled_passages() -> None:
    import random

    from peft_ir.retriever.train import _dataset

    examples = _scored_examples()
    ds = _dataset(examples, 3, seed=5, teacher=True)
    assert ds.column_names == ["query", "positive", "negative_1", "negative_2", "negative_3", "label"]
    assert len(ds) == 6
    for row in ds:
        texts = [row["positive"], row["negative_1"], row["negative_2"], row["negative_3"]]
        assert row["label"] == pytest.approx([_score_of(t) for t in texts])
    # the same negatives as sampling the texts themselves draws (runs before teacher scores are unchanged)
    rng = random.Random(5)
    before = [rng.sample(ex.negatives, 3) for ex in examples for _ in ex.positives]
    assert [[r["negative_1"], r["negative_2"], r["negative_3"]] for r in ds] == before
    assert "label" not in _dataset(examples, 3, seed=5).column_names


def test_cross_encoder_groups_carry_the_scores_of_their_sampled_passages() -> None:
    import random

    from peft_ir.data import TrainingExample
    from peft_ir.reranker.training import GroupCollator, build_groups

    examples = _scored_examples()
    examples[0].negatives[3] = examples[0].negatives[1]   # a repeated negative keeps its first score
    examples[0].negative_scores[3] = 99.0                 # type: ignore[index]
    for group_size in (4, 9):                             # 9: fewer negatives than needed, drawn with replacement
        rows = build_groups(examples, group_size, seed=3, teacher=True)
        assert len(rows) == 6 and all(len(r["teacher"]) == group_size for r in rows)
        for r in rows:
            assert r["teacher"] == pytest.approx([_score_of(t) for t in r["passages"]])
        rng, before = random.Random(3), []
        for ex in examples:
            negs = list(dict.fromkeys(ex.negatives))
            for pos in ex.positives:
                k = group_size - 1
                before.append([pos, *(rng.sample(negs, k) if len(negs) >= k else rng.choices(negs, k=k))])
        assert [r["passages"] for r in rows] == before
    assert "teacher" not in build_groups(examples, 4, seed=3)[0]

    class Encoder:
        def pair_ids(self, qs, ps):  # type: ignore[no-untyped-def]
            return list(zip(qs, ps))

        def collate(self, pairs):  # type: ignore[no-untyped-def]
            return {"pairs": pairs}

    batch = GroupCollator(Encoder())(rows[:2])  # type: ignore[arg-type]
    import torch

    torch.testing.assert_close(batch["teacher"], torch.tensor([rows[0]["teacher"], rows[1]["teacher"]]))
    with pytest.raises(PeftIRError, match="has no teacher scores"):
        build_groups([TrainingExample("q", ["p"], ["n"], "q9")], 2, seed=0, teacher=True)
