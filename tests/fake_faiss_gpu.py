"""A stand-in for faiss-gpu on a machine without a GPU: the calls peft-ir makes, recorded, answered with CPU indexes.

`FakeFaissGpu(monkeypatch, gpus)` patches the installed `faiss` module so that it reports `gpus` GPUs. Cloning
behaves as FAISS' GpuCloner does where peft-ir depends on it: Flat, IVF-Flat, IVF-SQ and IVF-PQ (also inside a
pre-transform) become "GPU" indexes; any other type raises on one GPU ("not implemented on GPU") and is copied to
the CPU, silently, on several. A "GPU" index refuses k > 2048 as FAISS' GPU k-selection does, and counts its
searches. Also `embeddings_folder`: vectors written in the `peft-ir encode` layout, for building real indexes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

GPU_TYPES = ("IndexFlat", "IndexFlatIP", "IndexFlatL2", "IndexIVFFlat", "IndexIVFScalarQuantizer", "IndexIVFPQ")


class Options:
    """faiss.GpuMultipleClonerOptions with FAISS' defaults (the fields peft-ir may set)."""

    def __init__(self) -> None:
        self.shard = False
        self.useFloat16 = False
        self.useFloat16CoarseQuantizer = False
        self.usePrecomputed = False


class GpuIndex:
    """What the cloner returns: searches that FAISS' GPU limits would refuse raise; everything else is the copy's."""

    def __init__(self, cpu: Any, searches: list[int]):
        self.cpu = cpu
        self._searches = searches

    def search(self, x: np.ndarray, k: int):  # type: ignore[no-untyped-def]
        if k > 2048:
            raise RuntimeError("Error in GpuIndex::search: 'k > 0 && k <= getMaxKSelection()' failed: "
                               f"GPU index only supports min/max-K selection up to 2048 (requested {k})")
        self._searches.append(k)
        return self.cpu.search(x, k)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cpu, name)


def _core_type(index: Any) -> str:
    while type(index).__name__ == "IndexPreTransform":
        index = faiss.downcast_index(index.index)
    return type(index).__name__


class FakeFaissGpu:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, gpus: int = 1, refuse: str | None = None):
        """`refuse`: a message every clone raises with (FAISS refusing an index, e.g. an unsupported PQ size)."""
        self.gpus, self.refuse = gpus, refuse
        self.options: list[Any] = []      # the cloner options of every clone asked for
        self.searches: list[int] = []     # k of every search that reached a "GPU" index
        self.to_cpu: int = 0              # index_gpu_to_cpu calls (a whole-index copy each)
        self.parameters: list[tuple[str, Any]] = []
        monkeypatch.setattr(faiss, "get_num_gpus", lambda: gpus)
        monkeypatch.setattr(faiss, "GpuMultipleClonerOptions", Options, raising=False)
        monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", self.clone)
        monkeypatch.setattr(faiss, "index_gpu_to_cpu", self.back_to_cpu, raising=False)
        fake = self

        class GpuParameterSpace:
            def set_index_parameter(self, index, name, value):  # type: ignore[no-untyped-def]
                fake.parameters.append((name, value))
                faiss.ParameterSpace().set_index_parameter(getattr(index, "cpu", index), name, value)

        monkeypatch.setattr(faiss, "GpuParameterSpace", GpuParameterSpace, raising=False)

    def clone(self, index: Any, co: Any = None, ngpu: int = -1) -> Any:
        self.options.append(co)
        if self.refuse:
            raise RuntimeError(self.refuse)
        copy = faiss.clone_index(index)
        if _core_type(index) in GPU_TYPES:
            return GpuIndex(copy, self.searches)
        if self.gpus == 1:
            raise RuntimeError("Error in faiss::gpu::ToGpuCloner::clone_Index at GpuCloner.cpp: "
                               "This index type is not implemented on GPU.")
        return copy  # several GPUs: FAISS' CPU cloner copies what has no GPU version

    def back_to_cpu(self, index: Any) -> Any:
        self.to_cpu += 1
        return faiss.clone_index(getattr(index, "cpu", index))


def embeddings_folder(out: Path, vecs: np.ndarray, first: int = 0) -> Path:
    """`vecs` as a `peft-ir encode` folder (two chunks, docids d<first>, d<first + 1>, ...)."""
    n, chunk = len(vecs), (len(vecs) + 1) // 2
    (out / "chunks").mkdir(parents=True)
    ids = np.array([f"d{first + i}" for i in range(n)])
    for k in range(2):
        part = slice(k * chunk, min(n, (k + 1) * chunk))
        np.savez(out / "chunks" / f"chunk-{k:06d}.npz", embeddings=vecs[part].astype(np.float32), ids=ids[part])
    manifest = {"model": "synthetic", "dim": int(vecs.shape[1]), "num_docs": n, "num_chunks": 2, "chunk_size": chunk,
                "dtype": "float32", "fingerprint": "synthetic", "normalize": True}
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return out


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)
