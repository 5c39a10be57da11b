"""FAISS indexes over encoded corpora: build (training on a sample when the factory needs it), load, search.

Search runs on GPU through faiss-gpu when it is installed and sees a GPU, else exact search with torch on a
GPU for Flat indexes, else on the CPU. Several index shards are searched one by one and merged exactly.

IVF indexes probe `nprobe` inverted lists per query: FAISS' own default of 1 misses many true neighbours, so
`build_index` records DEFAULT_NPROBE (or the caller's value) in the manifest and every load applies it, through
FAISS' parameter space (which also reaches an IVF behind a pre-transform such as OPQ or PCA, and GPU clones).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from peft_ir.atomic import atomic_path
from peft_ir.errors import MismatchError, PeftIRError
from peft_ir.retriever.encode import iter_embeddings, read_manifest
from peft_ir.retriever.encoder import fingerprint

log = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
IDS_FILE = "docids.txt"
MANIFEST = "manifest.json"
DEFAULT_NPROBE = 32  # lists probed per query when none is given (at most the index's nlist)


def _faiss():  # type: ignore[no-untyped-def]
    try:
        import faiss  # noqa: PLC0415
    except ImportError:
        raise PeftIRError("FAISS is not installed: pip install 'peft-ir[cpu]' (or 'peft-ir[gpu]')") from None
    return faiss


def _sample(emb_dir: Path, n: int, seed: int = 0) -> np.ndarray:
    """A uniform sample of up to n vectors for training IVF/PQ quantisers, read chunk by chunk."""
    manifest = read_manifest(emb_dir)
    rng = np.random.default_rng(seed)
    take = set(rng.choice(manifest["num_docs"], size=min(n, manifest["num_docs"]), replace=False).tolist())
    out, offset = [], 0
    for vecs, _ in iter_embeddings(emb_dir):
        rows = [i - offset for i in range(offset, offset + len(vecs)) if i in take]
        if rows:
            out.append(vecs[rows])
        offset += len(vecs)
    return np.concatenate(out).astype(np.float32)


def _nprobe(index: Any, nprobe: int | None, where: str, factory: str) -> int | None:
    """The nprobe to search CPU `index` with: None for a non-IVF index, else `nprobe` (default DEFAULT_NPROBE)
    capped at the number of lists; refuses nprobe < 1 and an nprobe asked of a non-IVF index."""
    if nprobe is not None and nprobe < 1:
        raise PeftIRError(f"{where}: nprobe must be at least 1, got {nprobe}")
    ivf = _faiss().try_extract_index_ivf(index)
    if ivf is None:
        if nprobe is not None:
            raise PeftIRError(f"{where}: nprobe applies to IVF indexes only, not {factory}")
        return None
    return min(nprobe or DEFAULT_NPROBE, int(ivf.nlist))


def _set_nprobe(space: Any, index: Any, nprobe: int, where: str) -> None:
    """Set nprobe through a FAISS (Gpu)ParameterSpace, which reaches the IVF inside pre-transforms and replicas."""
    try:
        space.set_index_parameter(index, "nprobe", nprobe)
    except RuntimeError as exc:  # e.g. GPU IVF search takes at most 2048 lists
        raise PeftIRError(f"{where}: FAISS could not set nprobe {nprobe}: {exc}") from None


def build_index(emb_dir: str | Path, index_dir: str | Path, factory: str = "Flat", *,
                train_sample: int = 200_000, hnsw_ef_search: int = 128, nprobe: int | None = None,
                progress: bool = True) -> dict[str, Any]:
    """Build a FAISS index (inner product) from `peft-ir encode` output; the folder appears only when complete.

    An IVF index is written with `nprobe` (default DEFAULT_NPROBE) set and recorded in the manifest."""
    faiss = _faiss()
    emb_dir = Path(emb_dir)
    manifest = read_manifest(emb_dir)
    dim = int(manifest["dim"])
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise PeftIRError(f"FAISS could not build factory string {factory!r}: {exc}") from None
    nprobe = _nprobe(index, nprobe, str(index_dir), factory)
    if not index.is_trained:
        sample = _sample(emb_dir, train_sample)
        log.info("training %s on %d vectors", factory, len(sample))
        index.train(sample)
    extra: dict[str, Any] = {}
    if nprobe is not None:
        _set_nprobe(faiss.ParameterSpace(), index, nprobe, str(index_dir))
        extra["nprobe"] = nprobe
    if hasattr(index, "hnsw"):
        index.hnsw.efSearch = hnsw_ef_search  # FAISS writes efSearch into the index file
        extra["ef_search"] = hnsw_ef_search
    ids: list[str] = []
    bar = tqdm(total=manifest["num_docs"], unit="vec", desc=f"index {factory}", disable=not progress)
    for vecs, chunk_ids in iter_embeddings(emb_dir):
        if vecs.shape[1] != dim:
            raise MismatchError(f"{emb_dir}: a chunk has dimension {vecs.shape[1]}, the manifest says {dim}")
        index.add(np.ascontiguousarray(vecs, dtype=np.float32))
        ids.extend(chunk_ids)
        bar.update(len(vecs))
    bar.close()
    out = dict(manifest, factory=factory, ntotal=int(index.ntotal), metric="ip", **extra)
    with atomic_path(index_dir) as tmp:
        tmp.mkdir()
        faiss.write_index(index, str(tmp / INDEX_FILE))
        (tmp / IDS_FILE).write_text("\n".join(ids) + "\n", encoding="utf-8")
        (tmp / MANIFEST).write_text(json.dumps(out, indent=2), encoding="utf-8")
    return out


class DenseIndex:
    """A loaded index shard: `search(queries, k)` and `vectors(docids)` (the protocol vector PRF relies on).

    `nprobe` overrides, for an IVF index, the value recorded at build time (`self.nprobe`; None if not IVF)."""

    def __init__(self, index_dir: str | Path, device: str = "auto", nprobe: int | None = None):
        faiss = _faiss()
        self.path = Path(index_dir)
        for name in (INDEX_FILE, IDS_FILE, MANIFEST):
            if not (self.path / name).is_file():
                raise PeftIRError(f"{self.path}: not a peft-ir index (missing {name})")
        self.manifest = json.loads((self.path / MANIFEST).read_text())
        self.docids = (self.path / IDS_FILE).read_text(encoding="utf-8").splitlines()
        self.index = faiss.read_index(str(self.path / INDEX_FILE))
        if self.index.ntotal != len(self.docids):
            raise PeftIRError(f"{self.path}: {self.index.ntotal} vectors but {len(self.docids)} docids")
        self._row = {d: i for i, d in enumerate(self.docids)}
        factory, recorded = str(self.manifest.get("factory", "this index")), self.manifest.get("nprobe")
        self.nprobe = _nprobe(self.index, nprobe if nprobe is not None else recorded, str(self.path), factory)
        if self.nprobe is not None:
            _set_nprobe(faiss.ParameterSpace(), self.index, self.nprobe, str(self.path))
            origin = "asked for" if nprobe is not None else "recorded" if recorded is not None else "default"
            log.info("%s: searching %s with nprobe %d (%s)", self.path, factory, self.nprobe, origin)
        self.backend = "faiss-cpu"
        self._torch_matrix = None
        self._use_device(device)

    def _use_device(self, device: str) -> None:
        faiss = _faiss()
        gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        if device in ("auto", "cuda") and gpus > 0:
            self.index = faiss.index_cpu_to_all_gpus(self.index)
            if self.nprobe is not None:  # on every replica, whatever the cloner copied
                _set_nprobe(faiss.GpuParameterSpace(), self.index, self.nprobe, str(self.path))
            self.backend = f"faiss-gpu x{gpus}"
            return
        import torch  # noqa: PLC0415

        if device in ("auto", "cuda") and torch.cuda.is_available() and self.manifest.get("factory") == "Flat":
            self._torch_matrix = torch.from_numpy(self.index.reconstruct_n(0, self.index.ntotal)).cuda()
            self.backend = "torch-cuda (exact)"
        elif device == "cuda":
            raise PeftIRError("--device cuda asked for, but neither faiss-gpu nor torch sees a GPU")

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def check_encoder(self, manifest: dict[str, Any]) -> None:
        """Refuse queries from an encoder whose fingerprint differs from the one that built the index."""
        mine, theirs = self.manifest.get("fingerprint"), fingerprint(manifest)
        if manifest.get("dim") != self.dim:
            raise MismatchError(f"query encoder {manifest.get('model')} gives dimension {manifest.get('dim')}, "
                                f"index {self.path} has dimension {self.dim}")
        if mine != theirs:
            diff = [k for k in ("model", "base_hash", "adapter_hash", "pooling", "normalize", "query_prefix",
                                "passage_prefix") if self.manifest.get(k) != manifest.get(k)]
            raise MismatchError(
                f"query encoder does not match index {self.path}: index built by {self.manifest.get('model')} "
                f"(fingerprint {mine}), queries from {manifest.get('model')} (fingerprint {theirs}); differing: "
                + ", ".join(f"{k}={self.manifest.get(k)!r} vs {manifest.get(k)!r}" for k in diff))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise MismatchError(f"queries of shape {queries.shape} against index {self.path} of dimension {self.dim}")
        k = min(k, len(self.docids))
        if self._torch_matrix is not None:
            import torch  # noqa: PLC0415

            s, i = torch.topk(torch.from_numpy(queries).to(self._torch_matrix) @ self._torch_matrix.T, k, dim=1)
            scores, rows = s.cpu().numpy(), i.cpu().numpy()
        else:
            scores, rows = self.index.search(queries, k)
        return scores, [[self.docids[r] for r in row if r >= 0] for row in rows]

    def vectors(self, docids: Sequence[str]) -> np.ndarray:
        try:
            rows = [self._row[d] for d in docids]
        except KeyError as exc:
            raise PeftIRError(f"document {exc.args[0]!r} is not in index {self.path}") from None
        faiss = _faiss()
        index = faiss.index_gpu_to_cpu(self.index) if self.backend.startswith("faiss-gpu") else self.index
        if hasattr(index, "make_direct_map"):
            index.make_direct_map()
        return np.stack([index.reconstruct(r) for r in rows]).astype(np.float32)


def search_shards(shards: Sequence[DenseIndex], queries: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]:
    """Search every shard for its top k and merge exactly (highest scores first, ties by docid descending as in
    `peft_ir.data.ranked`, so the cut at k keeps the tied documents evaluation ranks first)."""
    if len(shards) == 1:
        return shards[0].search(queries, k)
    per_shard = [s.search(queries, k) for s in shards]
    all_scores, all_ids = [], []
    for qi in range(len(queries)):
        merged = [(float(score), docid) for scores, ids in per_shard for score, docid in zip(scores[qi], ids[qi])]
        merged.sort(reverse=True)
        merged = merged[:k]
        all_scores.append([s for s, _ in merged])
        all_ids.append([d for _, d in merged])
    return np.array(all_scores, dtype=np.float32), all_ids
