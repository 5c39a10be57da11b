"""Encoding resumes chunk by chunk, indexes refuse mismatched encoders, shards merge exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from peft_ir.data import Document
from peft_ir.errors import MismatchError, PeftIRError
from peft_ir.indexing.dense import DenseIndex, build_index, search_shards
from peft_ir.indexing.search import dense_search, encoder_for, load_shards
from peft_ir.precision import ComputeDtype
from peft_ir.retriever.config import EncoderSpec
from peft_ir.retriever.encode import encode_corpus, iter_embeddings
from peft_ir.retriever.encoder import BiEncoder

DOCS = [Document(f"d{i}", f"title {i}", " ".join(["word"] * (i % 7 + 1)) + f" number {i}") for i in range(40)]


@pytest.fixture(scope="module")
def encoder(tiny_bert_dir: Path) -> BiEncoder:
    return BiEncoder(EncoderSpec(model=str(tiny_bert_dir), normalize=True), device="cpu")


def _all(emb_dir: Path) -> tuple[np.ndarray, list[str]]:
    vecs, ids = zip(*iter_embeddings(emb_dir))
    return np.concatenate(vecs), [i for chunk in ids for i in chunk]


def test_interrupted_encoding_resumes_without_redoing_chunks(encoder: BiEncoder, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    encode_corpus(encoder, DOCS, tmp_path / "full", chunk_size=8, progress=False)
    full_vecs, full_ids = _all(tmp_path / "full")

    real = encoder.encode_passages
    calls: list[int] = []

    def dies_on_third(texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        calls.append(len(texts))
        if len(calls) == 3:
            raise KeyboardInterrupt  # the process is killed mid-chunk
        return real(texts, batch_size=batch_size)

    monkeypatch.setattr(encoder, "encode_passages", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        encode_corpus(encoder, DOCS, tmp_path / "resumed", chunk_size=8, progress=False)
    assert sorted(p.name for p in (tmp_path / "resumed" / "chunks").iterdir()) == ["chunk-000000.npz", "chunk-000001.npz"]
    assert not (tmp_path / "resumed" / "manifest.json").exists()  # nothing looks finished
    with pytest.raises(PeftIRError, match="encoding has not finished"):
        list(iter_embeddings(tmp_path / "resumed"))

    calls.clear()
    monkeypatch.setattr(encoder, "encode_passages", lambda texts, batch_size=64, progress=False: (calls.append(len(texts)), real(texts, batch_size=batch_size))[1])
    encode_corpus(encoder, DOCS, tmp_path / "resumed", chunk_size=8, progress=False)
    assert len(calls) == 3  # chunks 2, 3, 4 only
    vecs, ids = _all(tmp_path / "resumed")
    assert ids == full_ids and np.array_equal(vecs, full_vecs)


def test_a_resume_that_would_mix_chunkings_passage_cuts_or_corpora_is_refused(encoder: BiEncoder,
                                                                             tiny_bert_dir: Path,
                                                                             tmp_path: Path) -> None:
    # chunks are skipped by number: another --chunk-size would duplicate or drop documents, another passage limit
    # would mix two cuts in one index, a changed corpus would keep the old documents' vectors
    out = tmp_path / "emb"
    encode_corpus(encoder, DOCS, out, chunk_size=8, progress=False)
    for name in ("manifest.json", "chunks/chunk-000003.npz", "chunks/chunk-000004.npz"):
        (out / name).unlink()  # as if killed after chunk 2
    with pytest.raises(MismatchError, match=r"chunk_size 8, not 6: resume with the same --chunk-size"):
        encode_corpus(encoder, DOCS, out, chunk_size=6, progress=False)
    shorter = BiEncoder(EncoderSpec(model=str(tiny_bert_dir), normalize=True, passage_max_length=8), device="cpu")
    with pytest.raises(MismatchError, match=r"passage_limit \d+, not 8: resume with the same --passage-max-length"):
        encode_corpus(shorter, DOCS, out, chunk_size=8, progress=False)
    with pytest.raises(MismatchError, match=r"chunk-000001\.npz holds other documents than this corpus's chunk 000001 "
                                            r"\(document 1 of it: 'd8', the corpus has 'd9'\)"):
        encode_corpus(encoder, DOCS[:8] + DOCS[9:], out, chunk_size=8, progress=False)  # d8 gone: chunk 1 shifts
    encode_corpus(encoder, DOCS, out, chunk_size=8, progress=False)  # the same settings resume
    vecs, ids = _all(out)
    assert ids == [d.id for d in DOCS] and len(vecs) == len(DOCS)


def test_shards_cover_the_corpus_and_merge_exactly(encoder: BiEncoder, tmp_path: Path) -> None:
    for shard in range(3):
        encode_corpus(encoder, DOCS, tmp_path / "emb", chunk_size=8, shard_id=shard, num_shards=3, progress=False)
    vecs, ids = _all(tmp_path / "emb")
    assert ids == [d.id for d in DOCS]
    build_index(tmp_path / "emb", tmp_path / "flat", "Flat", progress=False)
    index = DenseIndex(tmp_path / "flat")
    queries = encoder.encode_queries(["word number 3", "title 17"])
    scores, hits = index.search(queries, 10)
    np.testing.assert_allclose(scores[0], np.sort(vecs @ queries[0])[::-1][:10], rtol=1e-5)
    assert np.allclose(index.vectors(["d5"])[0], vecs[5])

    # two index shards over halves of the corpus give the same top 10 as one index
    half = tmp_path / "half"
    for name, part in (("a", DOCS[:20]), ("b", DOCS[20:])):
        encode_corpus(encoder, part, half / f"emb-{name}", chunk_size=8, progress=False)
        build_index(half / f"emb-{name}", half / f"idx-{name}", "Flat", progress=False)
    shards = load_shards([half / "idx-a", half / "idx-b"])
    merged_scores, merged_hits = search_shards(shards, queries, 10)
    assert merged_hits == hits
    np.testing.assert_allclose(merged_scores, scores, rtol=1e-5)
    with pytest.raises(MismatchError, match=r"index shards overlap: document 'd0' is in .*idx-a and in .*idx-a"):
        load_shards([half / "idx-a", half / "idx-b", half / "idx-a"])  # a shard given twice

    # approximate shards can return fewer than k hits (IVF with one probed list): merged, not a crash
    for name in ("a", "b"):
        build_index(half / f"emb-{name}", half / f"ivf-{name}", "IVF2,Flat", progress=False)
    ivf = load_shards([half / "ivf-a", half / "ivf-b"], nprobe=1)
    more = encoder.encode_queries(["word number 3", "title 17", "word word word", "number 30", "title 2 word"])
    few_scores, few_hits = search_shards(ivf, more, 30)
    assert len({len(h) for h in few_hits}) > 1  # rows of different lengths: what np.array could not stack
    for row_scores, row_hits in zip(few_scores, few_hits):
        assert 0 < len(row_hits) <= 30 and len(set(row_hits)) == len(row_hits)
        assert np.all(np.isfinite(row_scores[:len(row_hits)])) and np.all(np.isneginf(row_scores[len(row_hits):]))


def test_search_refuses_a_mismatched_encoder(encoder: BiEncoder, tmp_path: Path, minilm_path: str) -> None:
    encode_corpus(encoder, DOCS[:10], tmp_path / "emb", chunk_size=8, progress=False)
    build_index(tmp_path / "emb", tmp_path / "idx", "Flat", progress=False)
    shards = load_shards([tmp_path / "idx"])
    run = dense_search(encoder_for(shards), shards, {"q1": "word number 3"}, hits=5, progress=False)
    assert len(run["q1"]) == 5
    with pytest.raises(MismatchError, match="dimension 384"):
        encoder_for(shards, model=minilm_path)
    other = BiEncoder(EncoderSpec(model=encoder.spec.model, normalize=True, query_prefix="query: "), device="cpu")
    with pytest.raises(MismatchError, match="query_prefix") as info:
        shards[0].check_encoder(other.manifest())
    assert shards[0].manifest["fingerprint"] in str(info.value)


def _flat_index_by(encoder: BiEncoder, tmp_path: Path) -> list[DenseIndex]:
    """Ten documents encoded by `encoder` (its precision recorded in the manifest) into a loaded Flat index."""
    encode_corpus(encoder, DOCS[:10], tmp_path / "emb", chunk_size=8, progress=False)
    build_index(tmp_path / "emb", tmp_path / "idx", "Flat", progress=False)
    shards = load_shards([tmp_path / "idx"])
    assert shards[0].manifest["compute_dtype"] == encoder.compute_dtype
    return shards


def _query_encoder(shards: list[DenseIndex], caplog: pytest.LogCaptureFixture,
                   dtype: ComputeDtype | None = None) -> tuple[BiEncoder, str]:
    """encoder_for's choice, and the text of the warnings it logged."""
    caplog.clear()
    with caplog.at_level("WARNING", logger="peft_ir.indexing.search"):
        chosen = encoder_for(shards, dtype=dtype)
    return chosen, " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_query_precision_other_than_the_corpus_is_used_and_logged(encoder: BiEncoder, tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    shards = _flat_index_by(encoder, tmp_path)  # float32
    alike, warned = _query_encoder(shards, caplog)
    assert alike.compute_dtype == "float32" and not warned
    bf16, warned = _query_encoder(shards, caplog, "bfloat16")
    assert bf16.compute_dtype == "bfloat16"
    assert "queries are encoded in bfloat16" in warned and "--dtype float32" in warned
    q = ["word number 3", "title 7"]
    in_bf16, in_fp32 = bf16.encode_queries(q), alike.encode_queries(q)
    assert not np.array_equal(in_bf16, in_fp32)  # the precision asked for is used
    np.testing.assert_allclose(in_bf16, in_fp32, atol=0.05)


def test_queries_are_encoded_in_the_corpus_precision_by_default(encoder: BiEncoder, tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    bf16 = BiEncoder(encoder.spec, device="cpu", dtype=torch.bfloat16)
    shards = _flat_index_by(bf16, tmp_path)
    default, warned = _query_encoder(shards, caplog)
    assert default.compute_dtype == "bfloat16" and not warned
    q = ["word number 3"]
    np.testing.assert_array_equal(default.encode_queries(q), bf16.encode_queries(q))


def test_a_float16_corpus_searched_on_the_cpu_gets_float32_queries(encoder: BiEncoder, tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture,
                                                                    cpu_only: None) -> None:
    shards = _flat_index_by(encoder, tmp_path)
    shards[0].manifest["compute_dtype"] = "float16"  # as encoded on a GPU; this machine's search runs on the CPU
    chosen, warned = _query_encoder(shards, caplog)
    assert chosen.compute_dtype == "float32"  # float16 is refused on the CPU: the default must not ask for it
    assert "the corpus of" in warned and "was encoded in float16" in warned


def test_encoding_folder_refuses_another_encoder(encoder: BiEncoder, tmp_path: Path) -> None:
    encode_corpus(encoder, DOCS[:10], tmp_path / "emb", chunk_size=8, progress=False)
    other = BiEncoder(EncoderSpec(model=encoder.spec.model, normalize=False), device="cpu")
    with pytest.raises(MismatchError, match="fingerprint"):
        encode_corpus(other, DOCS[:10], tmp_path / "emb", chunk_size=8, progress=False)


def test_hnsw_and_ivfpq_factories(encoder: BiEncoder, tmp_path: Path) -> None:
    encode_corpus(encoder, DOCS, tmp_path / "emb", chunk_size=16, progress=False)
    for factory in ("HNSW32", "IVF4,Flat"):
        m = build_index(tmp_path / "emb", tmp_path / factory.replace(",", "_"), factory, progress=False)
        assert m["ntotal"] == 40 and m["factory"] == factory
    with pytest.raises(PeftIRError, match="factory"):
        build_index(tmp_path / "emb", tmp_path / "bad", "NotAFactory", progress=False)
    assert not (tmp_path / "bad").exists()


def test_stale_temporary_chunks_of_this_shard_are_removed(encoder: BiEncoder, tmp_path: Path) -> None:
    chunks = tmp_path / "emb" / "chunks"
    chunks.mkdir(parents=True)
    mine, other = chunks / ".chunk-000002.npz.tmp-999999", chunks / ".chunk-000001.npz.tmp-999999"
    mine.write_bytes(b"half a chunk")
    other.write_bytes(b"another shard's chunk in progress")
    encode_corpus(encoder, DOCS, tmp_path / "emb", chunk_size=8, shard_id=0, num_shards=2, progress=False)
    assert not mine.exists() and other.exists()


def test_queries_are_cut_at_the_models_own_length_by_default() -> None:
    """A paragraph-long query is not cut at 64 tokens: the default is the model's max_seq_length (256 for MiniLM)."""
    query = " ".join(f"counter argument {i} about policy and evidence" for i in range(20))  # about 150 tokens
    default = BiEncoder(EncoderSpec(), device="cpu")
    assert default.spec.query_max_length == 256 and default.manifest()["query_max_length"] == 256
    explicit = BiEncoder(EncoderSpec(query_max_length=256), device="cpu")
    cut = BiEncoder(EncoderSpec(query_max_length=64), device="cpu")
    vec = default.encode_queries([query])
    np.testing.assert_allclose(vec, explicit.encode_queries([query]), atol=1e-6)
    assert not np.allclose(vec, cut.encode_queries([query]), atol=1e-3)  # the query really is longer than 64


def test_encoding_logs_how_many_texts_were_truncated(tiny_bert_dir: Path, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    encoder = BiEncoder(EncoderSpec(model=str(tiny_bert_dir), normalize=True, query_max_length=8,
                                    passage_max_length=8), device="cpu")
    with caplog.at_level("INFO", logger="peft_ir"):
        encode_corpus(encoder, DOCS, tmp_path / "emb", chunk_size=16, progress=False)
        build_index(tmp_path / "emb", tmp_path / "idx", "Flat", progress=False)
        dense_search(encoder, load_shards([tmp_path / "idx"]), {"q1": "word number 3", "q2": "word " * 20},
                     hits=5, progress=False)
    # [CLS] title i word * (i % 7 + 1) number i [SEP]: longer than 8 tokens when i % 7 >= 2
    long_docs = sum(len(encoder.model.tokenizer(d.joined())["input_ids"]) > 8 for d in DOCS)
    assert 0 < long_docs < len(DOCS)
    assert f"{long_docs} of 40 passages longer than 8 tokens were truncated" in caplog.text
    assert "1 of 2 queries longer than 8 tokens were truncated" in caplog.text


def test_a_length_below_one_token_is_refused(tiny_bert_dir: Path) -> None:
    with pytest.raises(PeftIRError, match="query_max_length must be a positive number of tokens, got 0"):
        BiEncoder(EncoderSpec(model=str(tiny_bert_dir), query_max_length=0), device="cpu")
