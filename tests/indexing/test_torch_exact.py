"""Exact search with torch (Flat indexes where FAISS has no GPU support): the corpus in tiles with a running top-k,
float16 storage, blocks on several devices. The device is a parameter, so CPU runs the same code a GPU would."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fake_faiss_gpu import embeddings_folder, unit_vectors
from peft_ir.indexing import dense
from peft_ir.indexing.dense import DenseIndex, build_index

faiss = pytest.importorskip("faiss")


def _flat(vectors: np.ndarray):  # type: ignore[no-untyped-def]
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def _full_sort(queries: np.ndarray, corpus: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The plain full top-k: every score, sorted by score descending, ties by row ascending."""
    scores = queries.astype(np.float64) @ corpus.astype(np.float64).T
    rows = np.arange(len(corpus))
    order = np.array([np.lexsort((rows, -s))[:k] for s in scores])
    return np.take_along_axis(scores, order, axis=1), order


@pytest.mark.parametrize("devices", [["cpu"], ["cpu", "cpu"]])
@pytest.mark.parametrize("tile_rows, k", [(7, 5), (7, 20), (1_000, 50), (13, 500), (300, 300)])
def test_tiled_running_topk_equals_a_full_sort_with_ties(devices: list[str], tile_rows: int, k: int) -> None:
    from peft_ir.indexing.dense import TorchExactSearch

    rng = np.random.default_rng(0)
    # small integers: exact scores, and many ties (also across tiles and devices)
    corpus = rng.integers(-2, 3, size=(300, 6)).astype(np.float32)
    queries = rng.integers(-2, 3, size=(9, 6)).astype(np.float32)
    search = TorchExactSearch(_flat(corpus), [torch.device(d) for d in devices], tile_rows=tile_rows)
    scores, rows = search.search(queries, k)
    want_scores, want_rows = _full_sort(queries, corpus, k)
    assert rows.shape == (9, min(k, 300))  # k above the corpus size: the whole corpus
    assert np.array_equal(rows, want_rows)
    np.testing.assert_allclose(scores, want_scores, atol=1e-6, rtol=0)
    full = torch.topk(torch.from_numpy(queries) @ torch.from_numpy(corpus).T, min(k, 300), dim=1).values
    np.testing.assert_allclose(scores, full.numpy(), atol=1e-6, rtol=0)


def test_tiles_follow_the_memory_budget() -> None:
    from peft_ir.indexing.dense import TorchExactSearch

    search = TorchExactSearch(_flat(unit_vectors(100, 8)), [torch.device("cpu")], tile_bytes=4 * 10 * 25)
    assert search.rows_per_tile(10) == 25                              # float32: 10 query scores per row
    half = TorchExactSearch(_flat(unit_vectors(100, 8)), [torch.device("cpu")], dtype=torch.float16,
                            tile_bytes=4 * (10 + 8) * 5)
    assert half.rows_per_tile(10) == 5 and half.blocks[0][1].dtype == torch.float16  # + the float32 copy of a row
    assert search.rows_per_tile(10 ** 9) == 1                          # never zero


@pytest.mark.parametrize("ties", [False, True])
def test_no_temporary_outgrows_the_score_tile(ties: bool) -> None:
    """The tile budget holds: nothing a search allocates is larger than one tile of float32 scores (counting each
    row's candidates above the cut with a sum over a boolean tile allocated an int64 copy, twice the tile: 833 MiB
    beyond the stored vectors for a 256 MiB tile on an H200, bench/results/gpu_check.md)."""
    from torch.profiler import ProfilerActivity, profile

    from peft_ir.indexing.dense import TorchExactSearch

    rng = np.random.default_rng(0)
    corpus = (rng.integers(-2, 3, size=(4_000, 8)) if ties else rng.standard_normal((4_000, 8))).astype(np.float32)
    queries = (rng.integers(-2, 3, size=(16, 8)) if ties else rng.standard_normal((16, 8))).astype(np.float32)
    tile_bytes = 4 * 16 * 1_000
    search = TorchExactSearch(_flat(corpus), [torch.device("cpu")], tile_bytes=tile_bytes)
    assert search.rows_per_tile(16) == 1_000
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _, rows = search.search(queries, 50)
    largest = max(event.cpu_memory_usage for event in prof.events())
    assert largest == tile_bytes  # the score tile itself, and nothing larger
    assert np.array_equal(rows, _full_sort(queries, corpus, 50)[1])


def test_float16_storage_gives_the_same_top_ids_on_well_separated_data() -> None:
    from peft_ir.indexing.dense import TorchExactSearch

    corpus, queries = unit_vectors(2_000, 64), unit_vectors(20, 64, seed=1)
    # each query has ten near-copies in the corpus, far above every random document
    corpus[:200] = np.repeat(queries, 10, axis=0) + 0.05 * unit_vectors(200, 64, seed=2)
    full = TorchExactSearch(_flat(corpus), [torch.device("cpu")], tile_rows=128)
    half = TorchExactSearch(_flat(corpus), [torch.device("cpu")], dtype=torch.float16, tile_rows=128)
    s32, r32 = full.search(queries, 10)
    s16, r16 = half.search(queries, 10)
    assert all(set(a) == set(b) for a, b in zip(r32.tolist(), r16.tolist()))
    assert set(r32[0].tolist()) == set(range(10))
    np.testing.assert_allclose(s16, s32, atol=2e-3)


def test_dense_index_copies_the_corpus_to_the_devices_chunk_by_chunk(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """faiss-cpu with GPUs visible to torch: Flat is searched with torch, never holding a second host copy."""
    embeddings_folder(tmp_path / "emb", unit_vectors(3_000, 16))
    build_index(tmp_path / "emb", tmp_path / "flat", "Flat", progress=False)
    queries = unit_vectors(5, 16, seed=1)
    exact = DenseIndex(tmp_path / "flat", device="cpu").search(queries, 100)

    asked: list[tuple[int, int]] = []
    original = faiss.IndexFlatIP.reconstruct_n

    def reconstruct_n(self, n0=0, ni=-1, x=None):  # type: ignore[no-untyped-def]
        asked.append((n0, ni))
        return original(self, n0, ni, x)

    monkeypatch.setattr(faiss.IndexFlatIP, "reconstruct_n", reconstruct_n)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0)
    monkeypatch.setattr(dense, "RECONSTRUCT_ROWS", 1_000, raising=False)
    # two "GPUs" that are the CPU
    monkeypatch.setattr(dense, "_torch_gpus", lambda: [torch.device("cpu"), torch.device("cpu")], raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **kw: self)
    index = DenseIndex(tmp_path / "flat", device="auto")
    assert max(n for _, n in asked) <= 1_000 and sorted(asked) == [(0, 1_000), (1_000, 500), (1_500, 1_000),
                                                                  (2_500, 500)]
    assert index.backend == "torch-cpu x2 (exact)"
    assert [(start, len(block)) for start, block in index._torch.blocks] == [(0, 1_500), (1_500, 1_500)]
    scores, ids = index.search(queries, 100)
    assert ids == exact[1] and np.allclose(scores, exact[0], atol=1e-5)
