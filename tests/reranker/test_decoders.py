"""Cross-encoders built by the tokenizer's own pair template: the MiniLM/BERT scores of before (hand-built
[CLS] q [SEP] p [SEP]) are unchanged; decoders (RankLLaMA style) score the EOS that ends each pair, on either
padding side, train and re-rank."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from peft_ir.data import BeirDataset, load_corpus, read_run
from peft_ir.reranker.config import CrossEncoderSpec, RerankerTrainConfig
from peft_ir.reranker.model import CrossEncoder
from peft_ir.reranker.rerank import rerank_files
from peft_ir.reranker.training import train_reranker
from peft_ir.tuning import TuningConfig

QUERIES = ["alpha beta gamma", "river stone", "light metal glass paper water fire earth wind north south east"]
PASSAGES = ["alpha beta gamma delta", "cloud tree north south east west red blue green black alpha beta", "fire"]
# all-MiniLM-L6-v2 with its seed-42 head on SciFact test pairs (queries 1, 100, 1012 with their first judged document,
# then query 1 with query 100's), scored by the hand-built pairs of before (commit 5c51a69), max lengths 32 / 192.
MINILM_SCORES = [0.0151583356782794, -0.007171454839408398, -0.01217691134661436, -0.006820124574005604]
MINILM_FINGERPRINT = "d80e572734ad9b29aec168d2c7fff2b1d5bdaab70d5f009407948467c2379e67"


def _hand_built(tokenizer, q: str, p: str, q_max: int,  # type: ignore[no-untyped-def]
                p_max: int) -> tuple[list[int], list[int], list[int]]:
    """The BERT pair as the cross-encoder built it before: [CLS] q [SEP] p [SEP], types 0 then 1; segments 1 on the
    query's tokens, 2 on the passage's, 0 on the special ones."""
    q_ids = tokenizer(q, add_special_tokens=False, truncation=True, max_length=q_max)["input_ids"]
    p_ids = tokenizer(p, add_special_tokens=False, truncation=True, max_length=p_max)["input_ids"]
    first = [tokenizer.cls_token_id, *q_ids, tokenizer.sep_token_id]
    second = [*p_ids, tokenizer.sep_token_id]
    segments = [0, *[1] * len(q_ids), 0, *[2] * len(p_ids), 0]
    return first + second, [0] * len(first) + [1] * len(second), segments


def test_bert_pairs_equal_the_hand_built_ones(tiny_bert_dir: Path) -> None:
    ce = CrossEncoder(CrossEncoderSpec(model=str(tiny_bert_dir), query_max_length=3, passage_max_length=5))
    long_q, long_p = "w " * 50, "the moon's gravity pulls the oceans, producing tides twice a day " * 3
    queries, passages = [*QUERIES, long_q, ""], [*PASSAGES, long_p, "x"]
    assert ce.pair_ids(queries, passages) == [_hand_built(ce.tokenizer, q, p, 3, 5) for q, p in zip(queries, passages)]


@pytest.mark.slow
def test_minilm_scores_on_scifact_pairs_are_those_of_before(scifact: Path) -> None:
    ds = BeirDataset(scifact, "test")
    queries, qrels, corpus = ds.queries(), ds.qrels(), load_corpus(ds.corpus_path)
    qids = sorted(qrels)[:3]
    pairs = [(queries[q], corpus[sorted(qrels[q])[0]].joined()) for q in qids]
    pairs.append((queries[qids[0]], corpus[sorted(qrels[qids[1]])[0]].joined()))
    ce = CrossEncoder(CrossEncoderSpec(), device="cpu")
    qs, ps = [q for q, _ in pairs], [p for _, p in pairs]
    assert ce.pair_ids(qs, ps) == [_hand_built(ce.tokenizer, q, p, 32, 192) for q, p in pairs]
    assert ce.score(qs, ps) == pytest.approx(MINILM_SCORES, abs=1e-6)
    assert ce.fingerprint() == MINILM_FINGERPRINT  # the score caches of before stay valid


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_a_decoder_scores_the_eos_that_ends_each_pair(family: str, side: str, tiny_decoder_dir) -> None:
    """Checked by hand: the pair alone (query and passage cut first, then the template, then EOS) through the base
    model, the head applied to its last hidden state; batched scoring on either padding side gives the same."""
    spec = CrossEncoderSpec(model=str(tiny_decoder_dir(family)), query_max_length=4, passage_max_length=6,
                            query_prefix="query: ", passage_prefix="document: ")
    ce = CrossEncoder(spec, device="cpu")
    ce.tokenizer.padding_side = side
    tok, eos = ce.tokenizer, ce.tokenizer.eos_token_id
    assert ce.model.config.pad_token_id == tok.pad_token_id != eos  # the head's last non-pad token is the EOS
    items = ce.pair_ids(QUERIES, PASSAGES)
    backend = tok.backend_tokenizer
    for (ids, _, segments), q, p in zip(items, QUERIES, PASSAGES):
        q_ids = backend.encode("query: " + q, add_special_tokens=False).ids[:4]
        p_ids = backend.encode("document: " + p, add_special_tokens=False).ids[:6]
        # the cosine head's segments: exactly the query's and the passage's tokens, whatever the template adds
        assert [i for i, g in zip(ids, segments) if g == 1] == q_ids
        assert [i for i, g in zip(ids, segments) if g == 2] == p_ids
        if family == "llama":  # the Llama-like template: BOS q BOS p; then the EOS
            assert ids == [tok.bos_token_id, *q_ids, tok.bos_token_id, *p_ids, eos]
        else:  # Qwen's template adds nothing: q p EOS
            assert ids == [*q_ids, *p_ids, eos]
    batch = ce.collate(items)
    assert batch["attention_mask"][:, 0 if side == "right" else -1].all()  # padded on the chosen side
    scores = ce.score(QUERIES, PASSAGES, batch_size=3)
    for (ids, _, _), score in zip(items, scores):
        with torch.no_grad():
            hidden = ce.model.base_model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
            assert float(ce.model.score(hidden)[0]) == pytest.approx(score, abs=1e-5)


def test_prefixes_change_the_score_cache_name(tiny_decoder_dir) -> None:
    model = str(tiny_decoder_dir("qwen3"))
    plain = CrossEncoder(CrossEncoderSpec(model=model), device="cpu")
    prefixed = CrossEncoder(CrossEncoderSpec(model=model, query_prefix="query: "), device="cpu")
    assert plain.fingerprint() != prefixed.fingerprint()


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_a_decoder_reranker_trains_two_steps_and_reranks(family: str, tiny_decoder_dir, synthetic_beir: Path,
                                                         synthetic_runs: dict, tmp_path: Path) -> None:
    model = tiny_decoder_dir(family)
    spec = CrossEncoderSpec(model=str(model), query_max_length=8, passage_max_length=24, query_prefix="query: ",
                            passage_prefix="document: ")
    out = tmp_path / "run"
    cfg = RerankerTrainConfig(train=str(synthetic_beir), output=str(out), negatives_run=str(synthetic_runs["train"]),
                              negatives_window=(1, 20), negatives_pool=10, cross_encoder=spec,
                              tuning=TuningConfig(method="lora", lora_r=2), group_size=4, batch_size=4, max_steps=2,
                              save_steps=2, logging_steps=1, dev_queries=4, eval_steps=2, dev_candidates=8,
                              lr=1e-2, progress=False, selection_alpha=1.0)  # the trained weights, not the start
    summary = train_reranker(cfg)
    assert summary["steps"] == 2 and summary["best_dev"] is not None
    tuned = CrossEncoder(spec, adapter=out / "adapter", device="cpu")
    assert tuned.score(QUERIES, PASSAGES) != pytest.approx(CrossEncoder(spec).score(QUERIES, PASSAGES), abs=1e-6)
    reranked = tmp_path / "reranked.trec"
    stats = rerank_files(synthetic_runs["test"], synthetic_beir, synthetic_beir, tuned, reranked, hits=5)
    run = read_run(reranked)
    assert stats.scored == 5 * len(run) and all(len(hits) == 5 for hits in run.values())
