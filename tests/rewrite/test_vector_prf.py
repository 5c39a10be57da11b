"""Vector PRF (Rocchio): the pure update, and the two-pass search against a small in-memory FAISS index."""

from __future__ import annotations

import numpy as np
import pytest

from peft_ir.errors import PeftIRError
from peft_ir.rewrite.vector_prf import index_is_normalised, prf_run, rocchio, vector_prf_search

faiss = pytest.importorskip("faiss")


class FakeIndex:
    """The index protocol vector PRF relies on, over faiss.IndexFlatIP; counts calls."""

    def __init__(self, vectors: np.ndarray, normalized: bool | None = None):
        self.ids = [f"doc{i:03d}" for i in range(len(vectors))]
        self.matrix = vectors.astype(np.float32)
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(self.matrix)
        self.normalized = normalized
        self.searches: list[int] = []
        self.fetched: list[list[str]] = []

    def search(self, queries: np.ndarray, k: int):
        self.searches.append(k)
        scores, rows = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return scores, [[self.ids[r] for r in row if r >= 0] for row in rows]

    def vectors(self, docids):
        self.fetched.append(list(docids))
        return self.matrix[[self.ids.index(d) for d in docids]]


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_rocchio_exact_values():
    q = np.array([[1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    fb = [np.array([[0.0, 1.0], [0.0, 3.0]]), np.zeros((0, 2))]
    out = rocchio(q, fb, alpha=0.5, beta=2.0)
    np.testing.assert_allclose(out, [[0.5, 4.0], [0.0, 1.0]])  # second query: no feedback, alpha * q
    out = rocchio(q, fb, alpha=0.5, beta=2.0, normalise=True)
    np.testing.assert_allclose(out, [[0.5 / np.hypot(0.5, 4.0), 4.0 / np.hypot(0.5, 4.0)], [0.0, 1.0]], rtol=1e-6)
    assert q.tolist() == [[1.0, 0.0], [0.0, 2.0]]  # inputs untouched
    with pytest.raises(PeftIRError, match="feedback"):
        rocchio(q, fb[:1])
    with pytest.raises(PeftIRError, match="shape"):
        rocchio(q, [np.ones((2, 3)), np.ones((1, 2))])


def test_prf_search_equals_manual_two_pass():
    rng = np.random.default_rng(0)
    docs = unit(rng.normal(size=(200, 16)))
    queries = unit(rng.normal(size=(5, 16))).astype(np.float32)
    index = FakeIndex(docs, normalized=True)
    scores, ids = vector_prf_search(index, queries, k=10, fb_docs=3, alpha=0.6, beta=0.4)
    assert index.searches == [3, 10]
    # manual: top-3 by inner product, mean, Rocchio, renormalise, exact search
    sims = queries @ docs.T
    top3 = np.argsort(-sims, axis=1)[:, :3]
    new_q = unit(0.6 * queries + 0.4 * docs[top3].mean(axis=1))
    expect = np.argsort(-(new_q @ docs.T), axis=1)[:, :10]
    assert ids == [[f"doc{r:03d}" for r in row] for row in expect]
    np.testing.assert_allclose(scores, np.take_along_axis(new_q @ docs.T, expect, axis=1), rtol=1e-4, atol=1e-5)
    # the feedback vectors were fetched once for the union of feedback documents
    assert len(index.fetched) == 1 and set(index.fetched[0]) == {f"doc{r:03d}" for r in top3.ravel()}
    plain_scores, plain_ids = index.search(queries, 10)
    assert plain_ids != ids  # feedback changed the ranking of at least one query


def test_feedback_moves_query_towards_the_feedback_document():
    # doc0 on the x axis, doc1 26 degrees below it, doc2 53 degrees above; the query points 20 degrees up.
    docs = unit(np.array([[1.0, 0.0], [0.9, -0.44], [0.6, 0.8]], dtype=np.float32))
    query = unit(np.array([[0.94, 0.34]], dtype=np.float32))
    index = FakeIndex(docs, normalized=True)
    _, plain = index.search(query, 3)
    assert plain[0] == ["doc000", "doc002", "doc001"]
    # feedback from doc0 alone pulls the query onto the x axis: doc1 now beats doc2
    scores, ids = vector_prf_search(index, query, k=3, fb_docs=1, alpha=0.1, beta=0.9)
    assert ids[0] == ["doc000", "doc001", "doc002"]
    assert scores[0][0] > index.search(query, 1)[0][0][0]  # closer to the feedback document than before


def test_fb_docs_zero_and_normalisation_detection():
    rng = np.random.default_rng(1)
    docs = rng.normal(size=(30, 8))
    queries = rng.normal(size=(3, 8)).astype(np.float32)
    index = FakeIndex(docs)  # normalized unknown -> decided from the query norms (not unit here)
    s0, i0 = vector_prf_search(index, queries, k=5, fb_docs=0)
    s1, i1 = index.search(queries, 5)
    assert i0 == i1 and np.array_equal(s0, s1)
    assert not index_is_normalised(index, queries)
    assert index_is_normalised(index, unit(queries))
    assert index_is_normalised(type("I", (), {"manifest": {"normalize": True}})(), queries)
    # not normalised: q' = alpha q + beta mean(fb) exactly, scores are raw inner products
    scores, ids = vector_prf_search(index, queries, k=5, fb_docs=2, alpha=1.0, beta=1.0)
    first = np.argsort(-(queries @ docs.T), axis=1)[:, :2]
    new_q = queries + docs[first].mean(axis=1)
    np.testing.assert_allclose(scores[:, 0], (new_q @ docs.T).max(axis=1), rtol=1e-4)
    run = prf_run(["a", "b", "c"], (scores, ids))
    assert list(run) == ["a", "b", "c"] and list(run["a"]) == ids[0]
    with pytest.raises(PeftIRError):
        vector_prf_search(index, queries[0], k=5)


def test_cli_vector_prf_on_a_real_dense_index(tiny_bert_dir, tmp_path):
    """`peft-ir rewrite vector-prf` over a FAISS index built by the dense pipeline (tiny random BERT)."""
    from peft_ir.cli import main
    from peft_ir.data import Document, read_run, write_corpus, write_topics
    from peft_ir.indexing.search import encoder_for, load_shards

    docs = [Document(f"d{i}", f"title {i}", " ".join(["word", "fever", "planet", "sky"][: i % 4 + 1]) + f" {i}")
            for i in range(30)]
    corpus, topics = tmp_path / "corpus.jsonl", tmp_path / "topics.tsv"
    write_corpus(docs, corpus)
    write_topics({"1": "fever word", "2": "planet sky"}, topics)
    emb, idx, out = tmp_path / "emb", tmp_path / "idx", tmp_path / "prf.trec"
    assert main(["encode", "--corpus", str(corpus), "--output", str(emb), "--model", str(tiny_bert_dir),
                 "--normalize"]) == 0
    assert main(["index", "--embeddings", str(emb), "--index", str(idx)]) == 0
    assert main(["rewrite", "vector-prf", "--index", str(idx), "--topics", str(topics), "--output", str(out),
                 "--hits", "10", "--fb-docs", "2", "--alpha", "0.5", "--beta", "0.5", "--device", "cpu"]) == 0
    run = read_run(out)
    shards = load_shards([idx], "cpu")
    vecs = encoder_for(shards).encode_queries(["fever word", "planet sky"])
    assert index_is_normalised(shards[0], vecs)
    scores, ids = vector_prf_search(shards[0], vecs, 10, 2, 0.5, 0.5)
    for q, row_ids, row_scores in zip(("1", "2"), ids, scores):
        assert run[q] == pytest.approx(dict(zip(row_ids, row_scores.tolist())), abs=1e-5)


def test_vector_prf_on_a_gpu_index_reconstructs_only_the_feedback_rows(tmp_path, monkeypatch):
    """No copy of the whole GPU index back to host per query batch: the feedback rows come from the CPU index."""
    from fake_faiss_gpu import FakeFaissGpu, embeddings_folder, unit_vectors
    from peft_ir.indexing.dense import DenseIndex, build_index

    embeddings_folder(tmp_path / "emb", unit_vectors(500, 16))
    build_index(tmp_path / "emb", tmp_path / "idx", "Flat", progress=False)
    queries = unit_vectors(4, 16, seed=1)
    cpu = DenseIndex(tmp_path / "idx", device="cpu")
    want = vector_prf_search(cpu, queries, k=10, fb_docs=3)
    feedback = sorted({d for row in cpu.search(queries, 3)[1] for d in row})

    asked = []
    for name in ("reconstruct", "reconstruct_n", "reconstruct_batch"):
        original = getattr(faiss.IndexFlatIP, name)
        monkeypatch.setattr(faiss.IndexFlatIP, name,
                            lambda self, *a, _f=original, _n=name, **kw: asked.append((_n, a)) or _f(self, *a, **kw))
    gpu = FakeFaissGpu(monkeypatch, gpus=1)
    index = DenseIndex(tmp_path / "idx")
    assert index.backend == "faiss-gpu x1"
    for _ in range(2):  # two query batches
        scores, ids = vector_prf_search(index, queries, k=10, fb_docs=3)
        assert ids == want[1] and np.allclose(scores, want[0], atol=1e-6)
    # each search asks one hit more than it keeps: a tie at the cut would show (DenseIndex.search)
    assert gpu.to_cpu == 0 and gpu.searches == [4, 11, 4, 11]
    rows = sorted(int(r) for _, args in asked for r in np.atleast_1d(args[0]))
    assert not any(n == "reconstruct_n" for n, _ in asked) and rows == sorted(2 * [int(d[1:]) for d in feedback])


def test_vectors_through_a_pre_transform_and_across_shards(tmp_path):
    """An IVF inside PCA gets its direct map; each of several shards is asked once, for its own documents."""
    from fake_faiss_gpu import embeddings_folder, unit_vectors
    from peft_ir.cli.rewrite import _ShardSet
    from peft_ir.indexing.dense import DenseIndex, build_index

    vecs = unit_vectors(400, 16)
    embeddings_folder(tmp_path / "emb-a", vecs[:200])
    embeddings_folder(tmp_path / "emb-b", vecs[200:], first=200)
    build_index(tmp_path / "emb-a", tmp_path / "a", "Flat", progress=False)
    build_index(tmp_path / "emb-b", tmp_path / "b", "PCA16,IVF4,Flat", progress=False)
    shards = [DenseIndex(tmp_path / "a", device="cpu"), DenseIndex(tmp_path / "b", device="cpu")]
    np.testing.assert_allclose(shards[1].vectors(["d203", "d350"]), vecs[[203, 350]], atol=1e-4)  # PCA16 of 16 dims

    calls = []
    for shard in shards:
        fetch = shard.vectors
        shard.vectors = lambda ids, _f=fetch, _p=shard.path.name: calls.append((_p, list(ids))) or _f(ids)
    both = _ShardSet(shards)
    np.testing.assert_allclose(both.vectors(["d250", "d1", "d250"]), vecs[[250, 1, 250]], atol=1e-4)
    assert calls == [("a", ["d1"]), ("b", ["d250", "d250"])]
    with pytest.raises(PeftIRError, match="'nope' is in none of the index shards"):
        both.vectors(["d1", "nope"])
