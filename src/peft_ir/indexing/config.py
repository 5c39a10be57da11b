"""Settings of the first-stage stages, defined once: the `peft-ir index|search|bm25|fuse` flags and the experiment
YAML's index, search, bm25 and fuse sections are generated from these fields (peft_ir.settings)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from peft_ir.settings import setting


@dataclass(frozen=True, kw_only=True)
class IndexConfig:
    factory: str = setting("Flat", help="FAISS factory string: Flat, HNSW32, IVF4096,PQ64, ...")
    train_sample: int = setting(200_000, help="vectors used to train IVF/PQ")
    nprobe: int | None = setting(None, help="IVF lists probed per query, recorded in the manifest (default: 32, at "
                                            "most nlist); IVF indexes only")


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    hits: int = setting(1000, help="hits kept per query")
    batch_size: int = setting(64, help="queries encoded and searched per batch")
    device: Literal["auto", "cpu", "cuda"] = setting(
        "auto", help="auto: faiss-gpu when it sees a GPU (types without a GPU version: CPU, with a warning), else "
                     "torch exact search on the GPUs for Flat indexes, else CPU; cuda: refuse to run without a GPU")
    fp16_index: bool = setting(False, help="GPU search: store Flat vectors in float16 (half the memory; unit-vector "
                                           "scores within about 1e-3), float16 IVF-PQ lookup tables")


@dataclass(frozen=True, kw_only=True)
class BM25Config:
    k1: float = setting(0.9, help="BM25 term-frequency saturation")
    b: float = setting(0.4, help="BM25 length normalisation")
    threads: int | None = setting(None, help="search threads (default: one per core, at most 8)")


@dataclass(frozen=True, kw_only=True)
class FusionConfig:
    method: Literal["rrf", "interpolate"] = setting("rrf", help="reciprocal rank fusion or score interpolation")
    k: float = setting(60.0, help="RRF constant")
    norm: Literal["minmax", "zscore"] = setting("minmax", help="per-query score normalisation for interpolation")
    weights: list[float] | None = setting(None, help="one weight per run (default: 1 each for RRF, 1/n each for "
                                                     "interpolation)")
    hits: int = setting(1000, help="hits kept per query in the fused run")
