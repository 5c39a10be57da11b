"""IVF indexes are searched with a recorded nprobe (not FAISS' default of 1), overridable at load, GPU clones too."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from peft_ir.errors import PeftIRError
from peft_ir.indexing.dense import DenseIndex, build_index

faiss = pytest.importorskip("faiss")


def _clustered(out: Path, n: int, clusters: int, noise: float, queries: int = 200,
               dim: int = 32) -> np.ndarray:
    """Unit vectors around random centres in the `peft-ir encode` folder layout; returns queries drawn alike."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)

    def draw(m: int) -> np.ndarray:
        v = centres[rng.integers(0, clusters, m)] + noise * rng.standard_normal((m, dim)).astype(np.float32)
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    vecs, chunk = draw(n), (n + 1) // 2
    (out / "chunks").mkdir(parents=True)
    for k in range(2):
        part = slice(k * chunk, min(n, (k + 1) * chunk))
        np.savez(out / "chunks" / f"chunk-{k:06d}.npz", embeddings=vecs[part],
                 ids=np.array([f"d{i}" for i in range(n)][part]))
    manifest = {"model": "synthetic", "dim": dim, "num_docs": n, "num_chunks": 2, "chunk_size": chunk,
                "dtype": "float32", "fingerprint": "synthetic"}
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return draw(queries)


def _recall(found: list[list[str]], exact: list[list[str]]) -> float:
    return float(np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact)]))


def test_ivf_index_reaches_recall_at_the_default_nprobe(tmp_path: Path) -> None:
    # 20k vectors in 300 overlapping clusters: a query's top 10 spreads over several of the 256 inverted lists
    queries = _clustered(tmp_path / "emb", n=20_000, clusters=300, noise=1.0)
    build_index(tmp_path / "emb", tmp_path / "flat", "Flat", progress=False)
    manifest = build_index(tmp_path / "emb", tmp_path / "ivf", "IVF256,Flat", progress=False)
    exact = DenseIndex(tmp_path / "flat", device="cpu").search(queries, 10)[1]
    ivf = DenseIndex(tmp_path / "ivf", device="cpu")
    default = _recall(ivf.search(queries, 10)[1], exact)
    assert default >= 0.95, f"recall@10 {default:.3f} at the default nprobe"
    assert manifest["nprobe"] == 32 and ivf.nprobe == 32  # the documented default, recorded and applied
    assert json.loads((tmp_path / "ivf" / "manifest.json").read_text())["nprobe"] == 32
    # a search-time override reaches the index; one list per query (FAISS' own default) misses many neighbours
    one = DenseIndex(tmp_path / "ivf", device="cpu", nprobe=1)
    assert one.nprobe == 1 and faiss.extract_index_ivf(one.index).nprobe == 1
    assert _recall(one.search(queries, 10)[1], exact) < default - 0.1


def test_nprobe_at_build_through_a_pre_transform_and_its_limits(tmp_path: Path) -> None:
    _clustered(tmp_path / "emb", n=2_000, clusters=20, noise=0.5)
    m = build_index(tmp_path / "emb", tmp_path / "pca", "PCA16,IVF16,Flat", nprobe=4, progress=False)
    index = DenseIndex(tmp_path / "pca", device="cpu")
    assert m["nprobe"] == 4 and faiss.extract_index_ivf(index.index).nprobe == 4
    # an index built before nprobe was recorded gets the default, not what its file holds
    (tmp_path / "pca" / "manifest.json").write_text(json.dumps({k: v for k, v in m.items() if k != "nprobe"}))
    assert faiss.extract_index_ivf(DenseIndex(tmp_path / "pca", device="cpu").index).nprobe == 16
    # more lists than there are is all of them: the effective value is what the manifest records
    assert build_index(tmp_path / "emb", tmp_path / "few", "IVF16,Flat", progress=False)["nprobe"] == 16
    assert DenseIndex(tmp_path / "few", device="cpu", nprobe=100).nprobe == 16
    with pytest.raises(PeftIRError, match="nprobe must be at least 1, got 0"):
        build_index(tmp_path / "emb", tmp_path / "zero", "IVF16,Flat", nprobe=0, progress=False)
    with pytest.raises(PeftIRError, match="nprobe applies to IVF indexes only.*HNSW8"):
        build_index(tmp_path / "emb", tmp_path / "hnsw", "HNSW8", nprobe=8, progress=False)
    assert not (tmp_path / "zero").exists() and not (tmp_path / "hnsw").exists()
    flat = build_index(tmp_path / "emb", tmp_path / "flat", "Flat", progress=False)
    assert "nprobe" not in flat
    with pytest.raises(PeftIRError, match="nprobe applies to IVF indexes only"):
        DenseIndex(tmp_path / "flat", device="cpu", nprobe=8)
    with pytest.raises(PeftIRError, match="nprobe must be at least 1"):
        DenseIndex(tmp_path / "few", device="cpu", nprobe=-3)


def test_hnsw_ef_search_is_recorded_and_survives_loading(tmp_path: Path) -> None:
    _clustered(tmp_path / "emb", n=500, clusters=10, noise=0.5)
    m = build_index(tmp_path / "emb", tmp_path / "hnsw", "HNSW8", hnsw_ef_search=77, progress=False)
    assert m["ef_search"] == 77
    assert DenseIndex(tmp_path / "hnsw", device="cpu").index.hnsw.efSearch == 77  # FAISS serialises efSearch
    # behind a pre-transform (OPQ, PCA) the HNSW index is the inner one: it gets efSearch too
    m = build_index(tmp_path / "emb", tmp_path / "opq-hnsw", "OPQ4,HNSW8", hnsw_ef_search=77, progress=False)
    loaded = DenseIndex(tmp_path / "opq-hnsw", device="cpu").index  # held: the inner index is the outer one's
    inner = faiss.downcast_index(loaded.index)
    assert m["ef_search"] == 77 and inner.hnsw.efSearch == 77


def test_nprobe_is_set_on_the_gpu_clone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A clone that comes back with FAISS' default nprobe gets the chosen one through GpuParameterSpace."""
    _clustered(tmp_path / "emb", n=2_000, clusters=20, noise=0.5)
    build_index(tmp_path / "emb", tmp_path / "ivf", "IVF16,Flat", nprobe=4, progress=False)
    clones, calls = [], []

    def to_gpus(index, co=None):  # type: ignore[no-untyped-def]
        clone = faiss.clone_index(index)
        faiss.extract_index_ivf(clone).nprobe = 1
        clones.append(clone)
        return clone

    class GpuParameterSpace:
        def set_index_parameter(self, index, name, value):  # type: ignore[no-untyped-def]
            calls.append((name, value))
            faiss.ParameterSpace().set_index_parameter(index, name, value)

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", to_gpus)
    monkeypatch.setattr(faiss, "GpuParameterSpace", GpuParameterSpace, raising=False)
    monkeypatch.setattr(faiss, "GpuMultipleClonerOptions", lambda: type("Options", (), {})(), raising=False)
    index = DenseIndex(tmp_path / "ivf", device="auto", nprobe=8)
    assert index.backend.startswith("faiss-gpu") and index.index is clones[0]
    assert calls[-1] == ("nprobe", 8) and faiss.extract_index_ivf(index.index).nprobe == 8


def test_cli_index_search_and_vector_prf_take_nprobe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    from peft_ir.cli import main
    from peft_ir.indexing import search

    _clustered(tmp_path / "emb", n=2_000, clusters=20, noise=0.5)
    emb, ivf = str(tmp_path / "emb"), str(tmp_path / "ivf")
    assert main(["index", "--embeddings", emb, "--index", ivf, "--factory", "IVF16,Flat", "--nprobe", "4"]) == 0
    assert "nprobe 4" in capsys.readouterr().out
    assert json.loads((tmp_path / "ivf" / "manifest.json").read_text())["nprobe"] == 4
    flat = str(tmp_path / "flat")
    assert main(["index", "--embeddings", emb, "--index", flat, "--factory", "Flat", "--nprobe", "4"]) == 2
    assert "nprobe applies to IVF indexes only" in capsys.readouterr().err

    seen = []

    def spy(paths, device="auto", nprobe=None, fp16=False):  # type: ignore[no-untyped-def]
        seen.append((paths, device, nprobe, fp16))
        raise PeftIRError("stop here")

    monkeypatch.setattr(search, "load_shards", spy)
    common = ["--index", ivf, "--topics", "t.tsv", "--output", str(tmp_path / "run"), "--device", "cpu"]
    assert main(["search", *common, "--nprobe", "7"]) == 2
    assert main(["rewrite", "vector-prf", *common, "--nprobe", "9"]) == 2
    assert main(["search", *common]) == 2
    common[-1] = "cuda"
    assert main(["search", *common, "--fp16-index"]) == 2
    assert main(["rewrite", "vector-prf", *common, "--fp16-index"]) == 2
    assert seen == [([ivf], "cpu", 7, False), ([ivf], "cpu", 9, False), ([ivf], "cpu", None, False),
                    ([ivf], "cuda", None, True), ([ivf], "cuda", None, True)]
