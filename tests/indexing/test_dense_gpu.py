"""Dense search on faiss-gpu, with the GPU calls mocked (tests/fake_faiss_gpu.py): which backend an index gets
and why, the cloner options, the CPU fallback for types FAISS has no GPU version of, and k > 2048."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from fake_faiss_gpu import FakeFaissGpu, embeddings_folder, unit_vectors
from peft_ir.errors import PeftIRError
from peft_ir.indexing.dense import DenseIndex, build_index

faiss = pytest.importorskip("faiss")


def _index(tmp_path: Path, factory: str, n: int = 2_000, dim: int = 32, name: str = "idx") -> Path:
    emb = tmp_path / f"emb-{dim}-{n}"
    if not emb.exists():
        embeddings_folder(emb, unit_vectors(n, dim))
    build_index(emb, tmp_path / name, factory, progress=False)
    return tmp_path / name


def _ivfpq(tmp_path: Path, factory: str, name: str, dim: int = 64, n: int = 500) -> Path:
    """An IVF-PQ index folder with random quantisers in place of trained ones: FAISS' PQ training with 256
    centroids takes minutes on the test machine, and where the index is searched depends only on its shape."""
    folder = _index(tmp_path, "Flat", n=n, dim=dim, name=name)  # the docids and the manifest
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    rng = np.random.default_rng(0)
    ivf.quantizer.add(rng.standard_normal((ivf.nlist, dim)).astype(np.float32))
    faiss.copy_array_to_vector(rng.standard_normal(ivf.pq.M * ivf.pq.ksub * ivf.pq.dsub).astype(np.float32),
                               ivf.pq.centroids)
    ivf.is_trained = index.is_trained = True
    index.add(unit_vectors(n, dim))
    faiss.write_index(index, str(folder / "index.faiss"))
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps(dict(manifest, factory=factory)))
    return folder


def test_ivfpq64_gets_float16_lookup_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """64 sub-quantizers x 256 centroids of float32 tables (64 KiB) do not fit a GPU block's shared memory."""
    gpu = FakeFaissGpu(monkeypatch, gpus=1)
    pq64 = DenseIndex(_ivfpq(tmp_path, "IVF8,PQ64", "pq64"), device="auto")
    assert pq64.backend == "faiss-gpu x1"
    assert gpu.options[-1].useFloat16 is True and gpu.options[-1].shard is False
    pq16 = DenseIndex(_ivfpq(tmp_path, "IVF8,PQ16", "pq16"), device="cuda")
    assert pq16.backend == "faiss-gpu x1" and gpu.options[-1].useFloat16 is False  # 16 KiB of tables fit
    # one hit more than k is asked for: a tie at the cut would show (DenseIndex.search)
    assert pq16.search(unit_vectors(3, 64, seed=1), 5)[0].shape == (3, 5) and gpu.searches == [6]
    # nprobe still reaches the clone (the recorded default, at most nlist)
    assert gpu.parameters[-1] == ("nprobe", 8)


def test_several_gpus_shard_the_index_and_fp16_storage_is_optional(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    idx = _index(tmp_path, "Flat")
    gpu = FakeFaissGpu(monkeypatch, gpus=2)
    plain = DenseIndex(idx)
    assert plain.backend == "faiss-gpu x2"
    assert gpu.options[-1].shard is True and gpu.options[-1].useFloat16 is False
    half = DenseIndex(idx, fp16=True)
    assert gpu.options[-1].shard is True and gpu.options[-1].useFloat16 is True
    queries = unit_vectors(4, 32, seed=2)
    exact = DenseIndex(idx, device="cpu").search(queries, 10)
    assert half.search(queries, 10)[1] == exact[1] and plain.search(queries, 10)[1] == exact[1]


@pytest.mark.parametrize("gpus", [1, 2])
def test_hnsw_has_no_gpu_version_and_is_searched_on_cpu_with_a_warning(tmp_path: Path, gpus: int,
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    idx = _index(tmp_path, "HNSW8")
    gpu = FakeFaissGpu(monkeypatch, gpus=gpus)
    caplog.set_level(logging.INFO, logger="peft_ir")
    index = DenseIndex(idx, device="cuda")
    assert index.backend == "faiss-cpu" and gpu.options == []  # not copied, not labelled faiss-gpu
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning and "HNSW8" in warning[0].getMessage() and "no GPU version in FAISS" in warning[0].getMessage()
    assert index.search(unit_vectors(2, 32, seed=3), 5)[0].shape == (2, 5)


def test_an_index_faiss_refuses_to_copy_falls_back_to_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    idx = _index(tmp_path, "IVF8,Flat")
    FakeFaissGpu(monkeypatch, gpus=1, refuse="Error: 'isSupportedPQCodeLength(bytesPerCode)' failed")
    caplog.set_level(logging.WARNING, logger="peft_ir")
    index = DenseIndex(idx)
    assert index.backend == "faiss-cpu" and "isSupportedPQCodeLength" in caplog.text
    assert index.search(unit_vectors(2, 32, seed=4), 3)[1][0]


def test_k_above_2048_on_faiss_gpu_is_searched_on_the_cpu_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    idx = _index(tmp_path, "Flat", n=3_000, dim=16)
    queries = unit_vectors(3, 16, seed=5)
    exact = DenseIndex(idx, device="cpu").search(queries, 2_500)
    gpu = FakeFaissGpu(monkeypatch, gpus=1)
    caplog.set_level(logging.INFO, logger="peft_ir")
    index = DenseIndex(idx)
    for _ in range(2):
        scores, ids = index.search(queries, 2_500)
        assert ids == exact[1] and np.allclose(scores, exact[0], atol=1e-6)
    assert gpu.searches == []  # never sent to the GPU index, which would raise
    assert caplog.text.count("more than faiss-gpu can return") == 1  # said once
    assert index.search(queries, 2_048)[1] == [row[:2_048] for row in exact[1]] and gpu.searches == [2_048]


def test_choose_backend_says_what_runs_where_and_why() -> None:
    from peft_ir.indexing.dense import choose_backend

    flat, hnsw = faiss.IndexFlatIP(8), faiss.IndexHNSWFlat(8, 4, faiss.METRIC_INNER_PRODUCT)
    ivfpq = faiss.index_factory(16, "OPQ4,IVF4,PQ4", faiss.METRIC_INNER_PRODUCT)
    b = choose_backend(flat, "auto", faiss_gpus=0, torch_gpus=0)
    assert (b.kind, b.fallback) == ("faiss-cpu", False)
    assert choose_backend(flat, "cpu", faiss_gpus=4, torch_gpus=4).kind == "faiss-cpu"
    assert (choose_backend(ivfpq, "auto", faiss_gpus=2, torch_gpus=2).kind, 2) == ("faiss-gpu", 2)
    b = choose_backend(flat, "auto", faiss_gpus=0, torch_gpus=2)
    assert (b.kind, b.devices) == ("torch", 2) and "faiss-cpu" in b.reason
    b = choose_backend(hnsw, "auto", faiss_gpus=0, torch_gpus=1, factory="HNSW4")
    assert b.kind == "faiss-cpu" and b.fallback and "HNSW4" in b.reason
    b = choose_backend(ivfpq, "cuda", faiss_gpus=0, torch_gpus=1, factory="OPQ4,IVF4,PQ4")
    assert b.kind == "faiss-cpu" and b.fallback  # torch searches Flat indexes only
    with pytest.raises(PeftIRError, match="neither faiss-gpu nor torch sees a GPU"):
        choose_backend(flat, "cuda", faiss_gpus=0, torch_gpus=0)
    with pytest.raises(PeftIRError, match="device must be one of auto, cpu, cuda"):
        choose_backend(flat, "gpu", faiss_gpus=0, torch_gpus=0)
