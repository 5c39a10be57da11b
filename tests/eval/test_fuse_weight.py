"""The re-ranker's fusion weight chosen on dev queries (eval/fuse_weight.py) on hand-made runs and qrels, and the
interpolation's ends: weight 0 *is* the first stage, down to the bytes of its run file."""

from __future__ import annotations

from pathlib import Path

import pytest

from peft_ir.data import ranked, read_run, write_run
from peft_ir.errors import PeftIRError
from peft_ir.eval.fuse_weight import FIRST_STAGE_KEPT, GRID, WeightChoice, choose_fuse_weight
from peft_ir.indexing.fusion import fuse_reranked, write_fused_reranked

# One query, relevant passage b. Already min-max normalised, so fused(w) = a: 1 - w, b: 0.8 - 0.2 w, c: w:
# b is on top exactly for 0.25 < w < 2/3, i.e. at grid points 0.3, 0.4, 0.5, 0.6 (P@1 = 1 there, 0 elsewhere).
FIRST = {"q": {"a": 1.0, "b": 0.8, "c": 0.0}}
RERANKED = {"q": {"a": 0.0, "b": 0.6, "c": 1.0}}
QRELS = {"q": {"b": 1}}


def test_the_grid_runs_from_the_first_stage_to_the_reranker_alone() -> None:
    assert GRID[0] == 0.0 and GRID[-1] == 1.0 and len(GRID) == 11 and list(GRID) == sorted(GRID)


def test_the_best_weight_is_chosen_and_ties_go_to_the_smaller_reranker_weight() -> None:
    c = choose_fuse_weight(FIRST, RERANKED, QRELS, "P@1", hits=3)
    assert [v for _, v in c.grid] == [0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0]
    assert c.weight == 0.3  # 0.3 .. 0.6 tie at 1.0: the smallest re-ranker weight wins
    assert (c.first_stage, c.reranker, c.fused, c.queries, c.measure) == (0.0, 0.0, 1.0, 1, "P@1")
    assert "re-ranker weight 0.3 chosen on 1 dev queries" in c.verdict()
    assert "| 0.3 | 1.0000 ← chosen |" in c.table()
    assert WeightChoice.from_json(c.to_json()) == c


def test_several_queries_an_interior_weight_beats_both_ends() -> None:
    # q2's relevant z is the re-ranker's favourite and the first stage's last: fused x 1 - w, y 0.5 - 0.3 w, z w,
    # so z leads from w = 0.5 (a tie with x there, which trec_eval's order, docid descending, gives to z)
    first = {**FIRST, "q2": {"x": 1.0, "y": 0.5, "z": 0.0}}
    reranked = {**RERANKED, "q2": {"x": 0.0, "y": 0.2, "z": 1.0}}
    qrels = {**QRELS, "q2": {"z": 1}}
    c = choose_fuse_weight(first, reranked, qrels, "P@1", hits=3)
    assert [v for _, v in c.grid] == [0, 0, 0, 0.5, 0.5, 1, 1, 0.5, 0.5, 0.5, 0.5]
    assert c.weight == 0.5  # 0.5 and 0.6 get both queries right
    assert c.first_stage == 0.0 and c.reranker == 0.5


def test_a_reranker_worse_than_its_first_stage_gets_weight_0() -> None:
    first = {"q": {"a": 3.0, "b": 2.0, "c": 1.0}, "q2": {"x": 3.0, "y": 2.0, "z": 1.0}}
    reranked = {"q": {"a": -5.0, "b": 1.0, "c": 2.0}, "q2": {"x": -1.0, "y": 0.0, "z": 4.0}}  # the relevant last
    qrels = {"q": {"a": 1}, "q2": {"x": 2}}
    c = choose_fuse_weight(first, reranked, qrels, hits=3)
    assert c.measure == "nDCG@10" and c.weight == 0.0 and c.p_value == 1.0
    assert c.first_stage == 1.0 and c.reranker < 1.0 and c.fused == c.first_stage
    assert c.verdict().startswith(FIRST_STAGE_KEPT)


def test_a_reranker_no_better_than_its_first_stage_gets_weight_0() -> None:
    # every weight ranks the relevant passage first: all tie, and the smallest weight, the first stage, is kept
    first, reranked = {"q": {"a": 2.0, "b": 1.0}}, {"q": {"a": 9.0, "b": 1.0}}
    c = choose_fuse_weight(first, reranked, {"q": {"a": 1}}, hits=2)
    assert {v for _, v in c.grid} == {1.0} and c.weight == 0.0


def test_a_query_s_own_document_does_not_choose_the_weight_when_the_test_ignores_it() -> None:
    # ArguAna-style: q is also a document. The first stage puts it first and the relevant b second; the re-ranker
    # ranks b first. Judged with the self hit, RR@10 says 0.5 for the first stage and the fusion weight hangs on the
    # self hit's place; without it (as the test is judged) b leads from the re-ranker's side
    first = {"q": {"q": 3.0, "b": 2.0, "c": 1.0}}
    reranked = {"q": {"q": 0.0, "b": 1.0, "c": 0.5}}
    qrels = {"q": {"b": 1, "q": 0}}
    kept = choose_fuse_weight(first, reranked, qrels, "RR@10", hits=3)
    dropped = choose_fuse_weight(first, reranked, qrels, "RR@10", hits=3, ignore_self=True)
    assert kept.first_stage == 0.5 and dropped.first_stage == 1.0  # the self hit no longer stands in front of b
    assert {v for _, v in dropped.grid} == {1.0} and dropped.weight == 0.0
    assert kept.weight > 0.0


def test_equal_per_query_values_in_another_order_are_a_tie(monkeypatch: pytest.MonkeyPatch) -> None:
    # the first stage's per-query values summed as 0.3 + 0.2 + 0.1, the re-ranker's as 0.1 + 0.2 + 0.3: the same
    # values, but the second sum is larger in its last bit. A tie all the same, so the smaller weight, 0, wins
    import peft_ir.eval.fuse_weight as fw
    first = {f"q{i}": {"a": 1.0, "b": 0.0} for i in range(3)}
    reranked = {f"q{i}": {"a": 0.0, "b": 1.0} for i in range(3)}
    ends = {0.0: [0.3, 0.2, 0.1], 1.0: [0.1, 0.2, 0.3]}
    assert sum(ends[1.0]) > sum(ends[0.0])

    def per_query(qrels, run, measures, ignore_self=False):  # type: ignore[no-untyped-def]
        end = 0.0 if run == first else 1.0 if run == reranked else None
        return {str(measures[0]): {f"q{i}": v for i, v in enumerate(ends.get(end, [0.0] * 3))}}

    monkeypatch.setattr(fw, "per_query", per_query)
    c = choose_fuse_weight(first, reranked, {q: {"b": 1} for q in first}, "P@1", hits=2)
    assert c.weight == 0.0 and c.fused == c.first_stage


def test_a_grid_without_both_ends_is_refused() -> None:
    with pytest.raises(PeftIRError, match="hold 0"):
        choose_fuse_weight(FIRST, RERANKED, QRELS, hits=3, grid=[0.5, 1.0])
    with pytest.raises(PeftIRError, match="hold 0"):
        choose_fuse_weight(FIRST, RERANKED, QRELS, hits=3, grid=[0.0, 0.5])


def test_weight_0_reproduces_the_first_stage_exactly(tmp_path: Path) -> None:
    """The interpolation at weight 0 is the first stage: the same run, and written with the same tag the same
    bytes; the file-level fusion at weight 0 is a byte copy of the first stage's file whatever the tag."""
    # scores whose min-max normalisation would round two of them into a tie, and deeper hits below `hits`
    first = {"q1": {"a": 1e16, "b": 1.0, "c": 2.0, "d": 0.5, "e": 0.25}, "q2": {"x": 0.3, "y": 0.1}}
    reranked = {"q1": {"a": 0.1, "b": 0.9, "c": 0.5}, "q2": {"x": 0.0, "y": 1.0}}
    first_file, reranked_file = tmp_path / "first.trec", tmp_path / "reranked.trec"
    write_run(first, first_file, tag="bm25")
    write_run(reranked, reranked_file, tag="ce")
    for keep_rest in (True, False):
        fused = fuse_reranked(read_run(first_file), read_run(reranked_file), 0.0, hits=3, keep_rest=keep_rest)
        assert fused == read_run(first_file)
        write_run(fused, tmp_path / "again.trec", tag="bm25")
        assert (tmp_path / "again.trec").read_bytes() == first_file.read_bytes()
        write_fused_reranked(first_file, reranked_file, 0.0, 3, tmp_path / "final.trec", keep_rest=keep_rest)
        assert (tmp_path / "final.trec").read_bytes() == first_file.read_bytes()
    write_fused_reranked(first_file, reranked_file, 1.0, 3, tmp_path / "alone.trec")
    assert (tmp_path / "alone.trec").read_bytes() == reranked_file.read_bytes()
    # an interior weight really interpolates: q1's order is neither run's
    write_fused_reranked(first_file, reranked_file, 0.5, 3, tmp_path / "half.trec")
    order = [d for d, _ in ranked(read_run(tmp_path / "half.trec")["q1"])]
    assert order[:3] == ["b", "a", "c"] and order[3:] == ["d", "e"]
