"""Cross-encoder scoring, save/reload of every method (head included), re-ranking with a resumable cache."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from peft_ir.data import BeirDataset, load_corpus, read_run, write_corpus
from peft_ir.data.trec import ranked, write_topics
from peft_ir.errors import InputError, PeftIRError
from peft_ir.reranker.config import CrossEncoderSpec
from peft_ir.reranker.model import CrossEncoder
from peft_ir.reranker.rerank import (RerankStats, ScoreCache, default_cache_path, load_inputs, rerank,
                                     rerank_files)
from peft_ir.tuning import METHODS, TuningConfig, apply_tuning, save_tuned

QUERIES = ["alpha beta gamma", "river stone", "light metal glass paper water"]
PASSAGES = ["alpha beta gamma delta", "cloud tree north south east west red blue green", "fire"]


def _spec(model: Path, **kw) -> CrossEncoderSpec:  # type: ignore[no-untyped-def]
    return CrossEncoderSpec(model=str(model), query_max_length=8, passage_max_length=16, **kw)


def test_head_is_seeded_and_lengths_are_capped(tiny_bert_dir: Path) -> None:
    a, b = CrossEncoder(_spec(tiny_bert_dir)), CrossEncoder(_spec(tiny_bert_dir))
    c = CrossEncoder(_spec(tiny_bert_dir, seed=7))
    assert a.score(QUERIES, PASSAGES) == b.score(QUERIES, PASSAGES)
    assert a.score(QUERIES, PASSAGES) != c.score(QUERIES, PASSAGES)  # a new head, from its seed
    ids = a.pair_ids(["w " * 50], ["v " * 100])[0][0]
    assert len(ids) == 8 + 16 + 3
    # batched, length-sorted scoring equals one-by-one scoring (padding does not change a score)
    batched = a.score(QUERIES * 3, PASSAGES[::-1] * 3, batch_size=4)
    single = [a.score([q], [p])[0] for q, p in zip(QUERIES * 3, PASSAGES[::-1] * 3)]
    assert batched == pytest.approx(single, abs=1e-5)


def test_rerank_logs_how_many_texts_the_limits_cut(synthetic_beir: Path, synthetic_runs: dict, tiny_bert_dir: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    run, topics, passages = load_inputs(synthetic_runs["test"], synthetic_beir, synthetic_beir, hits=10)
    depth = {d for hits in run.values() for d, _ in ranked(hits, 10)}  # the passages rerank scores
    tok = CrossEncoder(_spec(tiny_bert_dir)).tokenizer
    lengths = sorted(len(tok(passages[d], add_special_tokens=False)["input_ids"]) for d in depth)
    limit = lengths[len(lengths) // 2]
    long_docs = sum(n > limit for n in lengths)
    assert 0 < long_docs < len(depth)  # both kinds at this limit, so a wrong count cannot pass
    ce = CrossEncoder(CrossEncoderSpec(model=str(tiny_bert_dir), query_max_length=1, passage_max_length=limit))
    with caplog.at_level("INFO", logger="peft_ir.reranker.model"):
        rerank(run, topics, passages, ce, hits=10)
    assert (f"re-ranking: {long_docs} of {len(depth)} distinct passages longer than {limit} tokens were truncated"
            in caplog.text)
    queries = {topics[q] for q in run}
    multi = sum(len(tok(q, add_special_tokens=False)["input_ids"]) > 1 for q in queries)
    assert f"{multi} of {len(queries)} distinct queries longer than 1 tokens" in caplog.text


def _perturb(model: torch.nn.Module) -> None:
    """Move every trainable weight off its (identity) initialisation so a lost weight would change the scores."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_save_reload_gives_identical_scores(method: str, tiny_bert_dir: Path, tmp_path: Path) -> None:
    ce = CrossEncoder(_spec(tiny_bert_dir))
    sizes = {"r": 4, "ar": 4, "prefix_len": 4, "lora_r": 4}
    used = set(TuningConfig(method=method).used_fields())
    apply_tuning(ce.model, TuningConfig.from_dict({"method": method, **{k: v for k, v in sizes.items() if k in used}}))
    _perturb(ce.model)
    ce.model.eval()
    before = ce.score(QUERIES, PASSAGES)
    save_tuned(ce.model, tmp_path / "adapter", str(tiny_bert_dir))
    other_head = CrossEncoder(_spec(tiny_bert_dir, seed=3), adapter=tmp_path / "adapter")  # head must come from disk
    assert other_head.score(QUERIES, PASSAGES) == pytest.approx(before, abs=1e-6)
    assert other_head.fingerprint() == ce.fingerprint()  # the score-cache key: same model state, same key
    untuned = CrossEncoder(_spec(tiny_bert_dir)).score(QUERIES, PASSAGES)
    assert untuned != pytest.approx(before, abs=1e-6)


def test_rerank_is_deterministic_and_resumes_from_cache(synthetic_beir: Path, synthetic_runs: dict, tiny_bert_dir: Path,
                                                         tmp_path: Path) -> None:
    ce = CrossEncoder(_spec(tiny_bert_dir))
    out = tmp_path / "reranked.trec"
    s1 = rerank_files(synthetic_runs["test"], synthetic_beir, synthetic_beir, ce, out, hits=10, batch_size=7)
    assert s1.scored == s1.pairs == 10 * 10
    first = out.read_text()
    run = read_run(out)
    assert all(len(h) == 10 for h in run.values())
    s2 = rerank_files(synthetic_runs["test"], synthetic_beir, synthetic_beir, ce, out, hits=10, batch_size=7)
    assert s2.scored == 0 and out.read_text() == first  # everything came from the cache, same bytes

    # a simulated interruption: a cache holding only the first 3 batches (and a torn last line)
    run_in, topics, passages = load_inputs(synthetic_runs["test"], synthetic_beir, synthetic_beir, hits=10)
    cache_path = tmp_path / "partial.jsonl"
    partial = ScoreCache(cache_path, model=ce.fingerprint())

    class Stop(Exception):
        pass

    calls = {"n": 0}
    original = ce.logits

    def failing(batch):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] > 3:
            raise Stop
        return original(batch)

    ce.logits = failing  # type: ignore[method-assign]
    with pytest.raises(Stop):
        rerank(run_in, topics, passages, ce, hits=10, batch_size=7, cache=partial)
    partial.close()
    ce.logits = original  # type: ignore[method-assign]
    with open(cache_path, "a") as fh:
        fh.write('{"q": "q4')  # torn write
    resumed = ScoreCache(cache_path, model=ce.fingerprint())
    assert len(resumed) == 21
    stats = RerankStats()
    rerank(run_in, topics, passages, ce, hits=10, batch_size=7, cache=resumed, stats=stats)
    resumed.close()
    assert stats.scored == 100 - 21
    out2 = tmp_path / "resumed.trec"
    rerank_files(synthetic_runs["test"], synthetic_beir, synthetic_beir, ce, out2, hits=10, cache_path=cache_path)
    assert out2.read_text() == first  # identical run after the interruption


def test_score_cache_keys_on_query_and_passage_text(synthetic_beir: Path, synthetic_runs: dict, tiny_bert_dir: Path,
                                                   tmp_path: Path) -> None:
    """Same qids, other text, one output: the cached scores of the old text are never reused (issue 5)."""
    ce = CrossEncoder(_spec(tiny_bert_dir))
    run, hits = synthetic_runs["test"], 5
    queries = BeirDataset(synthetic_beir, "test").queries()
    topics_a, topics_b = tmp_path / "a.tsv", tmp_path / "b.tsv"
    write_topics(queries, topics_a)
    write_topics({q: f"{t} water fire rewritten" for q, t in queries.items()}, topics_b)
    out = tmp_path / "same.trec"
    sa = rerank_files(run, topics_a, synthetic_beir, ce, out, hits=hits)
    first_a = out.read_text()
    sb = rerank_files(run, topics_b, synthetic_beir, ce, out, hits=hits)
    assert sb.scored == sb.pairs == sa.pairs == len(queries) * hits  # the second run scored all its pairs anew
    ra, rb = read_run(_write(tmp_path / "a.trec", first_a)), read_run(out)
    assert all(ra[q] != rb[q] for q in ra)  # different text, different scores
    fresh = tmp_path / "fresh-b.trec"
    rerank_files(run, topics_b, synthetic_beir, ce, fresh, hits=hits)
    assert out.read_text() == fresh.read_text()  # what a cache-free run of topics B gives

    # same text again: everything from the cache (it holds both texts' scores), same bytes as the first run
    again = rerank_files(run, topics_a, synthetic_beir, ce, out, hits=hits)
    assert again.scored == 0 and out.read_text() == first_a

    # one document's text changed: exactly that document's pairs are scored anew
    corpus = load_corpus(synthetic_beir / "corpus.jsonl")
    changed = next(iter(ra[next(iter(ra))]))  # a re-ranked hit of the first query
    corpus[changed] = replace(corpus[changed], text=corpus[changed].text + " metal glass")
    corpus_path = tmp_path / "corpus.jsonl"
    write_corpus(corpus.values(), corpus_path)
    with_doc = sum(changed in ra[q] for q in ra)
    assert with_doc >= 1
    sc = rerank_files(run, topics_a, corpus_path, ce, out, hits=hits)
    assert sc.scored == with_doc
    rc = read_run(out)
    for q in ra:
        assert {d: s for d, s in rc[q].items() if d != changed} == {d: s for d, s in ra[q].items() if d != changed}
        if changed in ra[q]:
            assert rc[q][changed] != ra[q][changed]


def test_old_format_cache_lines_are_scored_anew(synthetic_beir: Path, synthetic_runs: dict, tiny_bert_dir: Path,
                                                tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A cache line without the text hash (written before issue 5) is not trusted: its pair is scored again."""
    ce = CrossEncoder(_spec(tiny_bert_dir))
    out = tmp_path / "old.trec"
    run = read_run(synthetic_runs["test"])
    cache = default_cache_path(out, ce)
    with open(cache, "w", encoding="utf-8") as fh:
        for q, hits in run.items():
            for d in hits:
                fh.write(f'{{"q": "{q}", "d": "{d}", "s": 123.0}}\n')
    with caplog.at_level("INFO", logger="peft_ir.reranker.rerank"):
        stats = rerank_files(synthetic_runs["test"], synthetic_beir, synthetic_beir, ce, out, hits=5)
    assert stats.scored == stats.pairs == 10 * 5
    assert all(s != 123.0 for hits in read_run(out).values() for s in hits.values())
    old = [r for r in caplog.records if "old-format" in r.getMessage()]
    assert len(old) == 1 and "200" in old[0].getMessage()  # one line for the file, with the count


def test_a_cache_named_by_hand_never_serves_another_model_s_scores(synthetic_beir: Path, synthetic_runs: dict,
                                                                     tiny_bert_dir: Path, tmp_path: Path) -> None:
    # `--cache scores.jsonl` given to two models: the second must score its own pairs, not read the first's
    first = CrossEncoder(_spec(tiny_bert_dir))
    second = CrossEncoder(_spec(tiny_bert_dir, seed=7))  # another (random) head: another model
    assert first.fingerprint() != second.fingerprint()
    cache = tmp_path / "scores.jsonl"
    a = rerank_files(synthetic_runs["test"], synthetic_beir, synthetic_beir, first, tmp_path / "a.trec", hits=5,
                     cache_path=cache)
    b = rerank_files(synthetic_runs["test"], synthetic_beir, synthetic_beir, second, tmp_path / "b.trec", hits=5,
                     cache_path=cache)
    fresh = rerank_files(synthetic_runs["test"], synthetic_beir, synthetic_beir, second, tmp_path / "c.trec", hits=5)
    assert a.scored == b.scored == fresh.scored == 50  # nothing of the first model's served to the second
    assert read_run(tmp_path / "b.trec") == read_run(tmp_path / "c.trec") != read_run(tmp_path / "a.trec")
    again = rerank_files(synthetic_runs["test"], synthetic_beir, synthetic_beir, first, tmp_path / "a2.trec", hits=5,
                         cache_path=cache)
    assert again.scored == 0  # each model's own lines are still found


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_bad_inputs_name_the_file(synthetic_beir: Path, synthetic_runs: dict, tiny_bert_dir: Path, tmp_path: Path) -> None:
    ce = CrossEncoder(_spec(tiny_bert_dir))
    bad_doc = tmp_path / "bad_doc.trec"
    bad_doc.write_text("q40 Q0 nosuchdoc 1 3.0 x\n")
    with pytest.raises(InputError, match="corpus.jsonl.*nosuchdoc"):
        rerank_files(bad_doc, synthetic_beir, synthetic_beir / "corpus.jsonl", ce, tmp_path / "o.trec")
    bad_q = tmp_path / "bad_q.trec"
    bad_q.write_text("zz9 Q0 d1 1 3.0 x\n")
    topics = synthetic_beir / "queries.jsonl"
    with pytest.raises(InputError, match=r"queries\.jsonl.*zz9"):
        rerank_files(bad_q, topics, synthetic_beir, ce, tmp_path / "o.trec")
    with pytest.raises(PeftIRError, match="hits"):
        rerank_files(synthetic_runs["test"], synthetic_beir, synthetic_beir, ce, tmp_path / "o.trec", hits=0)
    assert not (tmp_path / "o.trec").exists()


def test_collate_equals_the_row_by_row_batch(tiny_bert_dir: Path) -> None:
    """The vectorised collate builds exactly the tensors the row-by-row loop did (CPU scores unchanged)."""
    ce = CrossEncoder(_spec(tiny_bert_dir))
    items = ce.pair_ids(QUERIES * 2 + ["x"], PASSAGES * 2 + ["y " * 40])
    width = max(len(ids) for ids, _, _ in items)
    pad = ce.tokenizer.pad_token_id or 0
    ids, types, mask = (torch.full((len(items), width), pad, dtype=torch.long),
                        torch.zeros((len(items), width), dtype=torch.long),
                        torch.zeros((len(items), width), dtype=torch.long))
    for i, (x, t, _) in enumerate(items):
        ids[i, : len(x)], types[i, : len(t)], mask[i, : len(x)] = torch.tensor(x), torch.tensor(t), 1
    got = ce.collate(items)
    assert got.keys() == {"input_ids", "attention_mask", "token_type_ids"}
    for key, expected in (("input_ids", ids), ("attention_mask", mask), ("token_type_ids", types)):
        assert got[key].dtype == torch.long and torch.equal(got[key], expected), key


def test_score_cache_flushes_every_batch_and_fsyncs_at_an_interval(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Every batch reaches the OS at once (a killed process loses nothing written); the disk sync that guards
    against power loss runs every `fsync_seconds` and on close, not after every 32-pair batch."""
    import os

    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    path = tmp_path / "c.jsonl"
    cache = ScoreCache(path, fsync_seconds=3600)
    for i in range(10):
        cache.add([("q", f"d{i}", "h", float(i))])
        assert len(ScoreCache(path)) == i + 1  # already readable by another process
    assert synced == []
    cache.close()
    assert len(synced) == 1
    every = ScoreCache(tmp_path / "e.jsonl", fsync_seconds=0)
    for i in range(3):
        every.add([("q", f"d{i}", "h", 0.0)])
    every.close()
    assert len(synced) == 1 + 3
