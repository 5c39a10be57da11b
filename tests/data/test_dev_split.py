"""Dev sets built to discriminate: with a first-stage run, each dev query meets its first stage's top hits (the
passages a trained model must out-rank), besides sampled passages; without a run the dev sets are as before."""

from __future__ import annotations

from pathlib import Path

from peft_ir.data.dev_split import split_dev, split_examples
from peft_ir.data.examples import load_examples
from peft_ir.data.trec import ranked, read_run
from peft_ir.data.beir import load_corpus
from peft_ir.fingerprint import text_id


def test_examples_carry_the_first_stage_top_k_in_rank_order(synthetic_beir: Path, synthetic_runs: dict) -> None:
    corpus = load_corpus(synthetic_beir / "corpus.jsonl")
    run = read_run(synthetic_runs["train"])
    examples, _ = load_examples(synthetic_beir, "train", synthetic_runs["train"], depth_to=20, first_stage_depth=5)
    for ex in examples:
        assert ex.first_stage == [corpus[d].joined() for d, _ in ranked(run[ex.query_id], 5)]
    without, _ = load_examples(synthetic_beir, "train", synthetic_runs["train"], depth_to=20)
    assert all(ex.first_stage is None for ex in without)
    # the mined negatives do not depend on it (same seeded sampling)
    assert [ex.negatives for ex in without] == [ex.negatives for ex in examples]


def test_the_retriever_dev_corpus_holds_each_dev_query_s_top_k_and_sampled_passages(
        synthetic_beir: Path, synthetic_runs: dict) -> None:
    examples, corpus = load_examples(synthetic_beir, "train", synthetic_runs["train"], depth_from=10, depth_to=20,
                                     num_negatives=1, first_stage_depth=3)
    _, dev = split_dev(examples, 5, seed=3, corpus_size=40, extra_passages=corpus)  # of the folder's 60 passages
    held = [ex for ex in examples if ex.query_id in dev.queries]
    top = {text_id(t) for ex in held for t in ex.first_stage or []}
    assert len(held) == 5 and top <= set(dev.corpus)
    own = top | {text_id(t) for ex in held for t in (*ex.positives, *ex.negatives)}
    assert len(dev.corpus) == 40 and len(set(dev.corpus) - own) >= 40 - 25   # sampled passages fill up the rest
    # without the run's top hits only the sample might catch them (as before the first stage was used)
    for ex in examples:
        ex.first_stage = None
    _, plain = split_dev(examples, 5, seed=3, corpus_size=40, extra_passages=corpus)
    assert plain.queries == dev.queries and len(top - set(plain.corpus)) >= 3


def test_the_reranker_dev_candidates_are_the_positives_and_the_first_stage_top_hits(
        synthetic_beir: Path, synthetic_runs: dict) -> None:
    examples, _ = load_examples(synthetic_beir, "train", synthetic_runs["train"], depth_from=5, depth_to=20,
                                num_negatives=4, first_stage_depth=6)
    _, dev = split_examples(examples, 8, seed=1, dev_candidates=6)
    by_id = {ex.query_id: ex for ex in examples}
    for qid, cands in dev.candidates.items():
        ex = by_id[qid]
        top = [t for t in ex.first_stage or [] if t not in ex.positives]
        assert cands == [*ex.positives, *top][:6]                    # the hardest non-relevant ones, in rank order
        assert dev.qrels[qid] == {str(i): 1 for i in range(len(ex.positives))}
    # without a run's top hits (a training file): positives and the example's own negatives, as before
    for ex in examples:
        ex.first_stage = None
    _, plain = split_examples(examples, 8, seed=1, dev_candidates=6)
    for qid, cands in plain.candidates.items():
        assert cands == list(dict.fromkeys([*by_id[qid].positives, *by_id[qid].negatives]))[:6]


def test_a_dev_corpus_too_small_for_the_top_hits_is_warned_about(synthetic_beir: Path, synthetic_runs: dict,
                                                                 caplog) -> None:  # type: ignore[no-untyped-def]
    examples, corpus = load_examples(synthetic_beir, "train", synthetic_runs["train"], first_stage_depth=10)
    _, dev = split_dev(examples, 5, seed=3, corpus_size=20, extra_passages=corpus)
    assert len(dev.corpus) > 20                                       # the top hits are all there nonetheless
    assert "fill the dev corpus" in caplog.text and "--dev-corpus 20" in caplog.text


def _one_per_pair(n_queries: int) -> list:
    """A triples-style list: each query's 2 positives x 3 negatives, one example per pair, queries interleaved."""
    from peft_ir.data.training import TrainingExample
    rows = [(q, p, n) for p in range(2) for n in range(3) for q in range(n_queries)]
    return [TrainingExample(f"query {q}", [f"pos {q}.{p}"], [f"neg {q}.{n}"]) for q, p, n in rows]


def test_a_query_with_several_examples_is_held_out_whole() -> None:
    # a dev query still trained on through its other lines would select the checkpoint on training data
    examples = _one_per_pair(12)
    train, dev = split_dev(examples, 4, seed=3, corpus_size=100)
    assert len(dev.queries) == 4 and len(set(dev.queries.values())) == 4
    assert not set(dev.queries.values()) & {ex.query for ex in train}
    assert len(train) == 8 * 6  # the 8 other queries, every line of each
    for qid, query in dev.queries.items():  # each dev query is judged on all its positives, none left unjudged
        q = query.split()[1]
        assert set(dev.qrels[qid]) == {text_id(f"pos {q}.{p}") for p in range(2)}
    rtrain, rdev = split_examples(examples, 4, seed=3, dev_candidates=10)
    assert set(rdev.queries.values()) == set(dev.queries.values())  # the same queries for both trainers
    assert not set(rdev.queries.values()) & {ex.query for ex in rtrain} and len(rtrain) == 48
    for qid, query in rdev.queries.items():
        q = query.split()[1]
        assert sorted(rdev.candidates[qid]) == sorted([f"pos {q}.{p}" for p in range(2)] +
                                                      [f"neg {q}.{n}" for n in range(3)])
        assert {rdev.candidates[qid][int(j)] for j in rdev.qrels[qid]} == {f"pos {q}.{p}" for p in range(2)}


def test_with_one_example_per_query_the_split_is_a_shuffle_of_positions(synthetic_beir: Path) -> None:
    # the committed results' dev splits: a seeded shuffle of the examples' positions, the first k held out
    import random
    examples, _ = load_examples(synthetic_beir, "train", None)
    order = list(range(len(examples)))
    random.Random(7).shuffle(order)
    train, dev = split_examples(examples, 5, seed=7, dev_candidates=4)
    assert list(dev.queries) == [examples[i].query_id for i in sorted(order[:5])]
    assert [ex.query_id for ex in train] == [examples[i].query_id for i in order[5:]]


def test_max_queries_counts_queries_with_every_example_of_each() -> None:
    from peft_ir.data.dev_split import first_queries, subset
    examples = _one_per_pair(12)  # 6 examples per query
    sample = subset(examples, 3, seed=1)
    assert len({ex.query for ex in sample}) == 3 and len(sample) == 18
    train, _ = split_examples(examples, 4, seed=3, dev_candidates=10)  # the re-ranker: a prefix of the shuffle
    first = first_queries(train, 3)
    assert len({ex.query for ex in first}) == 3 and len(first) == 18
    assert [ex.query for ex in first] == [ex.query for ex in train[:18]]  # each query's lines are contiguous
