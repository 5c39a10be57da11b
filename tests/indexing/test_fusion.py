"""Run fusion: exact worked examples for RRF and interpolation (min-max, z-score), edge cases, the CLI."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peft_ir.cli import main
from peft_ir.data import ranked, read_run, write_run
from peft_ir.errors import PeftIRError
from peft_ir.indexing.fusion import fuse, interpolate, normalise, rrf

# q1: A ranks d1 > d2 > d3; B ranks d2 > d4 = d1 (tie at 5.0, broken by docid descending as trec_eval does:
# d4 rank 2, d1 rank 3).
A = {"q1": {"d1": 3.0, "d2": 2.0, "d3": 1.0}}
B = {"q1": {"d2": 10.0, "d4": 5.0, "d1": 5.0}}


def test_rrf_worked_example_k60():
    fused = rrf([A, B], k=60)
    assert fused["q1"] == pytest.approx({
        "d1": 1 / 61 + 1 / 63, "d2": 1 / 62 + 1 / 61, "d3": 1 / 63, "d4": 1 / 62})
    assert [d for d, _ in ranked(fused["q1"])] == ["d2", "d1", "d4", "d3"]


def test_rrf_weights_and_small_k():
    fused = rrf([A, B], k=1, weights=[2.0, 1.0])
    assert fused["q1"] == pytest.approx({"d1": 2 / 2 + 1 / 4, "d2": 2 / 3 + 1 / 2, "d3": 2 / 4, "d4": 1 / 3})
    assert [d for d, _ in ranked(fused["q1"])] == ["d1", "d2", "d3", "d4"]
    fused = rrf([A, B], k=1, weights=[1.0, 3.0])
    assert fused["q1"] == pytest.approx({"d1": 1 / 2 + 3 / 4, "d2": 1 / 3 + 3 / 2, "d3": 1 / 4, "d4": 3 / 3})
    assert [d for d, _ in ranked(fused["q1"])] == ["d2", "d1", "d4", "d3"]


def test_rrf_uses_ranks_not_scores():
    scaled = {"q1": {d: s * 1000 - 7 for d, s in A["q1"].items()}}
    assert rrf([A, B]) == rrf([scaled, B])


def test_minmax_interpolation_worked_example():
    # A -> d1 1, d2 .5, d3 0;  B -> d2 1, d1 0, d4 0;  default weights 1/2 each
    fused = interpolate([A, B], norm="minmax")
    assert fused["q1"] == pytest.approx({"d1": 0.5, "d2": 0.75, "d3": 0.0, "d4": 0.0})
    fused = fuse([A, B], "interpolate", norm="minmax", weights=[0.2, 0.8])
    assert fused["q1"] == pytest.approx({"d1": 0.2, "d2": 0.2 * 0.5 + 0.8, "d3": 0.0, "d4": 0.0})


def test_zscore_interpolation_worked_example_missing_docs_get_zero():
    # A: mean 2, population sd sqrt(2/3) -> d1 +sqrt(3/2), d2 0, d3 -sqrt(3/2)
    # B: mean 20/3, sd sqrt(50/9) -> d2 +sqrt(2), d1 = d4 = -1/sqrt(2)
    fused = interpolate([A, B], norm="zscore", weights=[1.0, 1.0])
    r = math.sqrt(1.5)
    assert fused["q1"] == pytest.approx({
        "d1": r - 1 / math.sqrt(2),
        "d2": 0.0 + math.sqrt(2),
        "d3": -r + 0.0,          # missing from B: B contributes 0
        "d4": 0.0 - 1 / math.sqrt(2),  # missing from A: A contributes 0
    })


def test_normalise_degenerate_cases():
    assert normalise({"a": 4.0, "b": 4.0}, "minmax") == {"a": 1.0, "b": 1.0}
    assert normalise({"a": 4.0}, "zscore") == {"a": 0.0}
    assert normalise({}, "minmax") == {}
    with pytest.raises(PeftIRError, match="normalisation"):
        normalise({"a": 1.0}, "rank")  # type: ignore[arg-type]


def test_queries_union_in_first_seen_order_and_hits_cut():
    r1 = {"q2": {"a": 1.0}, "q1": {"a": 2.0, "b": 1.0}}
    r2 = {"q1": {"c": 3.0}, "q3": {"z": 1.0, "y": 0.5}}
    fused = rrf([r1, r2], k=0, hits=1)
    assert list(fused) == ["q2", "q1", "q3"]
    assert fused["q2"] == {"a": 1.0}
    # q1: a and c both rank 1 in their runs (1/1), b rank 2 (1/2): the cut at one hit keeps the tie trec_eval
    # ranks first (docid descending)
    assert fused["q1"] == {"c": 1.0}
    assert fused["q3"] == {"z": 1.0}


def test_argument_errors():
    with pytest.raises(PeftIRError, match="at least two runs"):
        rrf([A])
    with pytest.raises(PeftIRError, match="weight"):
        interpolate([A, B], weights=[1.0])
    with pytest.raises(PeftIRError, match="method"):
        fuse([A, B], "combsum")  # type: ignore[arg-type]


def test_a_run_weighted_zero_takes_no_part():
    # A ranks a > b > c (c judged relevant, say); B retrieved only z. With weight 0 B must not put z among A's hits:
    # with min-max z tied A's lowest hit c (and outranked it on docid), with z-score it sat at A's mean, above c
    a_run = {"q": {"a": 3.0, "b": 2.0, "c": 1.0}}
    b_run = {"q": {"z": 1.0}, "q-only-in-b": {"y": 1.0}}
    for norm in ("minmax", "zscore"):
        fused = interpolate([a_run, b_run], weights=[1.0, 0.0], norm=norm, hits=3)
        assert list(fused) == ["q"] and [d for d, _ in ranked(fused["q"])] == ["a", "b", "c"]
    assert [d for d, _ in ranked(rrf([a_run, b_run], weights=[1.0, 0.0])["q"])] == ["a", "b", "c"]
    assert set(rrf([a_run, b_run], weights=[0.0, 2.0])) == {"q", "q-only-in-b"}
    with pytest.raises(PeftIRError, match="every weight is 0"):
        interpolate([a_run, b_run], weights=[0.0, 0.0])


scores = st.dictionaries(st.sampled_from([f"d{i}" for i in range(8)]),
                         st.floats(-100, 100, allow_nan=False), min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(scores, scores)
def test_minmax_fused_scores_bounded_and_rrf_rank_invariant(s1, s2):
    fused = interpolate([{"q": s1}, {"q": s2}], norm="minmax", weights=[0.3, 0.7])["q"]
    assert set(fused) == set(s1) | set(s2)
    assert all(-1e-12 <= v <= 1.0 + 1e-12 for v in fused.values())
    # a strictly increasing transform of one run's scores (scaling by 4 is exact in floating point) leaves RRF as is
    shifted = {d: 4 * v for d, v in s1.items()}
    assert rrf([{"q": s1}, {"q": s2}]) == rrf([{"q": shifted}, {"q": s2}])


def test_cli_fuse_rrf_and_interpolate(tmp_path, capsys):
    a, b = tmp_path / "a.trec", tmp_path / "b.trec"
    write_run(A, a)
    write_run(B, b)
    out = tmp_path / "fused.trec"
    assert main(["fuse", "--runs", str(a), str(b), "--method", "rrf", "--k", "1", "--weights", "1", "3",
                 "--output", str(out), "--hits", "3"]) == 0
    lines = out.read_text().splitlines()
    assert [line.split()[2] for line in lines] == ["d2", "d1", "d4"]
    assert lines[0].split() == ["q1", "Q0", "d2", "1", repr(1 / 3 + 3 / 2), "rrf-k1"]
    assert main(["fuse", "--runs", str(a), str(b), "--method", "interpolate", "--norm", "minmax",
                 "--output", str(out)]) == 0
    assert read_run(out)["q1"] == pytest.approx({"d1": 0.5, "d2": 0.75, "d3": 0.0, "d4": 0.0})
    assert main(["fuse", "--runs", str(a), "--output", str(tmp_path / "x.trec")]) == 2
    assert "at least two runs" in capsys.readouterr().err
    assert not (tmp_path / "x.trec").exists()


def test_fuse_reranked_interpolates_over_the_reranked_hits_and_keeps_the_rest() -> None:
    from peft_ir.indexing.fusion import fuse_reranked

    first = {"q": {"a": 4.0, "b": 3.0, "c": 0.0, "d": -1.0}, "q2": {"x": 1.0, "y": 0.5}}
    reranked = {"q": {"a": 0.0, "b": 1.0, "c": 0.5}}  # the re-ranker scored the first stage's top 3 of q only
    out = fuse_reranked(first, reranked, 0.5, hits=3)
    # min-max over the top 3: first stage a 1, b 0.75, c 0; re-ranker a 0, b 1, c 0.5
    assert out["q"]["a"] == pytest.approx(0.5) and out["q"]["b"] == pytest.approx(0.875)
    assert out["q"]["c"] == pytest.approx(0.25)
    assert [d for d, _ in ranked(out["q"])] == ["b", "a", "c", "d"]  # d, below the re-ranked depth, follows
    assert out["q2"] == first["q2"]  # a query the re-ranker did not see keeps its first-stage ranking
    assert "d" not in fuse_reranked(first, reranked, 0.5, hits=3, keep_rest=False)["q"]
    assert [d for d, _ in ranked(fuse_reranked(first, reranked, 0.9, hits=3)["q"])][:3] == ["b", "c", "a"]
    # the ends are the runs themselves: 0 the first stage unchanged, 1 the re-ranker's own scores, then the rest
    assert fuse_reranked(first, reranked, 0.0, hits=3) == first
    assert fuse_reranked(first, reranked, 1.0, hits=3)["q"] == {"b": 1.0, "c": 0.5, "a": 0.0, "d": -1.0}
    for weight in (-0.5, 1.5):
        with pytest.raises(PeftIRError, match="between 0"):
            fuse_reranked(first, reranked, weight, hits=3)
