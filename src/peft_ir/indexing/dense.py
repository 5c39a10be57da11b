"""FAISS indexes over encoded corpora: build (training on a sample when the factory needs it), load, search.

Where search runs (`choose_backend`; logged with its reason when an index is loaded):
- faiss-gpu when it is installed and sees a GPU, for the types FAISS has a GPU version of (Flat, IVF-Flat, IVF-SQ,
  IVF-PQ, also behind OPQ/PCA): on one GPU, or sharded across several. IVF-PQ gets float16 lookup tables when
  float32 ones would not fit in a GPU block's 48 KiB of shared memory (PQ64 at 8 bits needs 64 KiB); `fp16` asks
  for float16 storage of Flat (and float16 IVF-PQ tables). Other types (HNSW, ...) and indexes the GPU cloner
  refuses are searched on CPU, with a warning. FAISS' GPU search returns at most 2048 hits per query: a larger k
  is searched on the CPU index read from disk, which is kept in host memory (it also serves `vectors`).
- torch exact search on the GPUs when FAISS has no GPU support (faiss-cpu on a GPU machine), for Flat indexes:
  the vectors are copied chunk by chunk into one block per GPU (float16 storage optional) and scored tile by tile
  with a running top-k (`TorchExactSearch`), so memory is bounded by a tile, not by the corpus.
- faiss-cpu otherwise.
Several index shards are searched one by one and merged exactly.

IVF indexes probe `nprobe` inverted lists per query: FAISS' own default of 1 misses many true neighbours, so
`build_index` records DEFAULT_NPROBE (or the caller's value) in the manifest and every load applies it, through
FAISS' parameter space (which also reaches an IVF behind a pre-transform such as OPQ or PCA, and GPU clones).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from tqdm.auto import tqdm

from peft_ir.atomic import atomic_path
from peft_ir.errors import MismatchError, PeftIRError
from peft_ir.fingerprint import manifest_fingerprint
from peft_ir.retriever.encode import iter_embeddings, read_manifest

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
IDS_FILE = "docids.txt"
MANIFEST = "manifest.json"
DEFAULT_NPROBE = 32  # lists probed per query when none is given (at most the index's nlist)
DEVICES = ("auto", "cpu", "cuda")
GPU_MAX_K = 2048  # FAISS' GPU k-selection returns at most this many hits per query
GPU_SHARED_MEMORY = 48 * 1024  # bytes of shared memory per block that FAISS' GPU IVF-PQ lookup tables must fit in
# the types FAISS' GPU cloner makes GPU indexes of; any other is "not implemented on GPU" on one GPU and, on
# several, silently copied to the CPU
GPU_TYPES = frozenset({"IndexFlat", "IndexFlatIP", "IndexFlatL2", "IndexIVFFlat", "IndexIVFScalarQuantizer",
                       "IndexIVFPQ"})
TORCH_TYPES = frozenset({"IndexFlat", "IndexFlatIP"})  # what torch exact search reproduces (inner product)
DEFAULT_TILE_BYTES = 1 << 30  # torch exact search: float32 work per tile (scores, and an fp16 tile's fp32 copy)
RECONSTRUCT_ROWS = 65_536  # torch exact search: rows copied from the FAISS index to a device at a time


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
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) else index
    if hasattr(inner, "hnsw"):  # behind a pre-transform (OPQ..,HNSW..) too
        inner.hnsw.efSearch = hnsw_ef_search  # FAISS writes efSearch into the index file
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


def _core(index: Any) -> Any:
    """The index inside any pre-transforms (OPQ, PCA): its type decides where FAISS can search it."""
    faiss = _faiss()
    while type(index).__name__ == "IndexPreTransform":
        index = faiss.downcast_index(index.index)
    return index


@dataclass(frozen=True)
class Backend:
    """Where an index is searched, on how many devices, and why (`fallback`: a GPU is there but not used)."""

    kind: Literal["faiss-gpu", "torch", "faiss-cpu"]
    devices: int
    reason: str
    fallback: bool = False


def choose_backend(index: Any, device: str, *, faiss_gpus: int, torch_gpus: int, factory: str = "") -> Backend:
    """The backend for CPU `index` on `device` (auto|cpu|cuda), given how many GPUs faiss-gpu and torch see."""
    if device not in DEVICES:
        raise PeftIRError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu":
        return Backend("faiss-cpu", 0, "device cpu asked for")
    core = type(_core(index)).__name__
    name = f"{factory} ({core})" if factory else core
    if faiss_gpus > 0:
        if core in GPU_TYPES:
            return Backend("faiss-gpu", faiss_gpus, f"faiss-gpu sees {faiss_gpus} GPU(s)")
        return Backend("faiss-cpu", 0, f"{name} has no GPU version in FAISS: searching on CPU", True)
    if torch_gpus > 0:
        if type(index).__name__ in TORCH_TYPES and index.metric_type == _faiss().METRIC_INNER_PRODUCT:
            return Backend("torch", torch_gpus, f"FAISS without GPU support (faiss-cpu): exact search with torch on "
                                                f"{torch_gpus} GPU(s)")
        return Backend("faiss-cpu", 0, f"{name} on CPU: this FAISS has no GPU support (install faiss-gpu) and "
                                       "torch searches Flat indexes only", True)
    if device == "cuda":
        raise PeftIRError("--device cuda asked for, but neither faiss-gpu nor torch sees a GPU")
    return Backend("faiss-cpu", 0, "no GPU visible")


def visible_gpus() -> tuple[int, int]:
    """(GPUs faiss-gpu sees, GPUs torch sees): 0 for faiss-cpu, and for torch without CUDA."""
    faiss = _faiss()
    return (faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0), len(_torch_gpus())


def _torch_gpus() -> list[torch.device]:
    import torch  # noqa: PLC0415

    return [torch.device("cuda", i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


class TorchExactSearch:
    """Exact inner-product top-k with torch over the vectors of a FAISS index, on one or several devices.

    The corpus is split into one contiguous block of rows per device, filled RECONSTRUCT_ROWS rows at a time
    straight from the index (the host never holds a second copy), optionally stored in float16. A query batch is
    scored against one tile of rows at a time (`tile_rows`, or as many as `tile_bytes` of float32 work allow) and
    a running top-k is merged tile by tile, so memory does not grow with the corpus. Devices search their blocks in
    parallel threads. Ties are ranked by row (lower first), as a full sort would rank them: the result does not
    depend on tiles or devices."""

    def __init__(self, index: Any, devices: Sequence[torch.device | str], *, dtype: torch.dtype | None = None,
                 tile_bytes: int = DEFAULT_TILE_BYTES, tile_rows: int | None = None):
        import torch  # noqa: PLC0415

        if not devices:
            raise PeftIRError("torch exact search needs at least one device")
        self.ntotal, self.dim = int(index.ntotal), int(index.d)
        self.dtype = dtype or torch.float32
        self.tile_bytes, self.tile_rows = tile_bytes, tile_rows
        bounds = [self.ntotal * i // len(devices) for i in range(len(devices) + 1)]
        self.blocks: list[tuple[int, torch.Tensor]] = []  # (first row, its rows on one device)
        for device, lo, hi in zip(devices, bounds, bounds[1:]):
            block = torch.empty((hi - lo, self.dim), dtype=self.dtype, device=device)
            for start in range(lo, hi, RECONSTRUCT_ROWS):
                n = min(RECONSTRUCT_ROWS, hi - start)
                block[start - lo:start - lo + n].copy_(torch.from_numpy(index.reconstruct_n(start, n)))
            self.blocks.append((lo, block))

    def rows_per_tile(self, n_queries: int) -> int:
        """Rows scored at once: a float32 score per query, plus the float32 copy of a row stored in float16."""
        import torch  # noqa: PLC0415

        if self.tile_rows:
            return self.tile_rows
        per_row = 4 * (n_queries + (self.dim if self.dtype != torch.float32 else 0))
        return max(1, self.tile_bytes // per_row)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores (float32) and rows (int64) of the top min(k, ntotal) per query, best first."""
        import torch  # noqa: PLC0415

        q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        k = min(k, self.ntotal)
        blocks = [(first, block) for first, block in self.blocks if len(block)]
        if k < 1 or not blocks:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        if len(blocks) == 1:
            parts = [self._search_block(q, *blocks[0], k)]
        else:
            with ThreadPoolExecutor(len(blocks)) as pool:
                parts = list(pool.map(lambda b: self._search_block(q, *b, k), blocks))
        scores, rows = _merge_topk([p[0] for p in parts], [p[1] for p in parts], k)
        return scores.numpy(), rows.numpy()

    def _search_block(self, queries: torch.Tensor, first: int, block: torch.Tensor,
                      k: int) -> tuple[torch.Tensor, torch.Tensor]:
        import torch  # noqa: PLC0415

        q = queries.to(block.device)
        best_s = torch.empty((len(q), 0), dtype=torch.float32, device=block.device)
        best_r = torch.empty((len(q), 0), dtype=torch.long, device=block.device)
        step = self.rows_per_tile(len(q))
        for start in range(0, len(block), step):
            tile = block[start:start + step]
            scores = q @ (tile if tile.dtype == torch.float32 else tile.float()).T
            s, r = _topk_lowest_rows(scores, min(k, len(tile)))
            best_s, best_r = _merge_topk([best_s, s], [best_r, r + (first + start)], k)
        return best_s.cpu(), best_r.cpu()


def _topk_lowest_rows(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.topk along dim 1, except that of the scores tied at the cut the lowest columns are kept (topk's choice
    among ties is unspecified), so that the selection does not depend on how the corpus was tiled.

    A query has more candidates than places exactly when its (k+1)-th best score equals its k-th: one topk of k + 1
    finds them, with no tile-sized temporary (counting `scores >= cut` per row would cast a boolean tile to int64,
    twice the score tile's own memory). Tied queries, rare, are then redone one row at a time."""
    import torch  # noqa: PLC0415

    if k >= scores.shape[1]:
        values, cols = scores.topk(k, dim=1)
        return values, cols
    values, cols = scores.topk(k + 1, dim=1)
    tied = (values[:, k] == values[:, k - 1]).nonzero().squeeze(1).tolist()
    values, cols = values[:, :k].contiguous(), cols[:, :k].contiguous()
    for i in tied:
        row, cut = scores[i], values[i, k - 1]
        above = (row > cut).nonzero().squeeze(1)
        level = (row == cut).nonzero().squeeze(1)[:k - len(above)]
        pick = torch.cat([above, level]).sort().values
        cols[i], values[i] = pick, row[pick]
    return values, cols


def _merge_topk(scores: Sequence[torch.Tensor], rows: Sequence[torch.Tensor],
                k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The best k of several candidate lists per query: score descending, ties by row ascending."""
    import torch  # noqa: PLC0415

    s, r = torch.cat(list(scores), dim=1), torch.cat(list(rows), dim=1)
    r, order = torch.sort(r, dim=1, stable=True)
    s, order = torch.sort(s.gather(1, order), dim=1, descending=True, stable=True)
    return s[:, :k], r.gather(1, order)[:, :k]


class DenseIndex:
    """A loaded index shard: `search(queries, k)` and `vectors(docids)` (the protocol vector PRF relies on).

    `nprobe` overrides, for an IVF index, the value recorded at build time (`self.nprobe`; None if not IVF).
    `device` (auto|cpu|cuda) and `fp16` choose where and how it is searched (see the module docstring);
    `self.backend` says where: "faiss-gpu x2", "torch-cuda x1 (exact)", "faiss-cpu", ..."""

    def __init__(self, index_dir: str | Path, device: str = "auto", nprobe: int | None = None, fp16: bool = False):
        faiss = _faiss()
        self.path = Path(index_dir)
        for name in (INDEX_FILE, IDS_FILE, MANIFEST):
            if not (self.path / name).is_file():
                raise PeftIRError(f"{self.path}: not a peft-ir index (missing {name})")
        self.manifest = json.loads((self.path / MANIFEST).read_text())
        self.docids = (self.path / IDS_FILE).read_text(encoding="utf-8").splitlines()
        self.cpu_index = faiss.read_index(str(self.path / INDEX_FILE))  # kept for k > GPU_MAX_K and `vectors`
        if self.cpu_index.ntotal != len(self.docids):
            raise PeftIRError(f"{self.path}: {self.cpu_index.ntotal} vectors but {len(self.docids)} docids")
        self._row = {d: i for i, d in enumerate(self.docids)}
        self.factory = str(self.manifest.get("factory", "this index"))
        recorded = self.manifest.get("nprobe")
        self.nprobe = _nprobe(self.cpu_index, nprobe if nprobe is not None else recorded, str(self.path),
                              self.factory)
        if self.nprobe is not None:
            _set_nprobe(faiss.ParameterSpace(), self.cpu_index, self.nprobe, str(self.path))
            origin = "asked for" if nprobe is not None else "recorded" if recorded is not None else "default"
            log.info("%s: searching %s with nprobe %d (%s)", self.path, self.factory, self.nprobe, origin)
        self.index = self.cpu_index  # what FAISS searches: the CPU index, or its GPU clone
        self.backend = "faiss-cpu"
        self._torch: TorchExactSearch | None = None
        self._direct_map = False
        self._said_large_k = False
        self._use_device(device, fp16)

    def _use_device(self, device: str, fp16: bool) -> None:
        faiss_gpus, torch_gpus = visible_gpus() if device != "cpu" else (0, 0)
        plan = choose_backend(self.cpu_index, device, faiss_gpus=faiss_gpus, torch_gpus=torch_gpus,
                              factory=self.factory)
        if plan.kind == "faiss-gpu":
            try:
                self.index = self._to_gpus(plan.devices, fp16)
                self.backend = f"faiss-gpu x{plan.devices}"
            except RuntimeError as exc:  # e.g. a PQ size FAISS' GPU code does not support
                plan = Backend("faiss-cpu", 0, f"FAISS could not copy {self.factory} to GPU: {exc}; searching on "
                                               "CPU", True)
        elif plan.kind == "torch":
            import torch  # noqa: PLC0415

            devices = _torch_gpus()
            self._torch = TorchExactSearch(self.cpu_index, devices, dtype=torch.float16 if fp16 else None)
            self.backend = f"torch-{devices[0].type} x{len(devices)} (exact{', float16' if fp16 else ''})"
        note = "; float16 storage applies to GPU search only" if fp16 and self.backend == "faiss-cpu" else ""
        (log.warning if plan.fallback else log.info)("%s: searching on %s (%s%s)", self.path, self.backend,
                                                     plan.reason, note)

    def _to_gpus(self, gpus: int, fp16: bool) -> Any:
        """The faiss-gpu clone: sharded across several GPUs (each holds 1/n of the vectors rather than a replica);
        float16 storage for Flat when `fp16`; float16 lookup tables for IVF-PQ when `fp16` or when float32 ones
        would not fit in shared memory (FAISS' cloner option `useFloat16` means both)."""
        faiss = _faiss()
        co = faiss.GpuMultipleClonerOptions()
        co.shard = gpus > 1
        ivf = faiss.try_extract_index_ivf(self.cpu_index)
        ivf = faiss.downcast_index(ivf) if ivf is not None else None
        tables = int(ivf.pq.M) * int(ivf.pq.ksub) * 4 if type(ivf).__name__ == "IndexIVFPQ" else 0
        co.useFloat16 = bool(fp16 or tables > GPU_SHARED_MEMORY)
        if tables > GPU_SHARED_MEMORY:
            log.info("%s: %s needs %d KiB of float32 lookup tables (GPU shared memory: %d KiB): using float16 ones",
                     self.path, self.factory, tables // 1024, GPU_SHARED_MEMORY // 1024)
        index = faiss.index_cpu_to_all_gpus(self.cpu_index, co=co)
        if self.nprobe is not None:  # on every shard or replica, whatever the cloner copied
            _set_nprobe(faiss.GpuParameterSpace(), index, self.nprobe, str(self.path))
        return index

    @property
    def dim(self) -> int:
        return int(self.cpu_index.d)

    def check_encoder(self, manifest: dict[str, Any]) -> None:
        """Refuse queries from an encoder whose fingerprint differs from the one that built the index."""
        mine, theirs = self.manifest.get("fingerprint"), manifest_fingerprint(manifest)
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

    def __contains__(self, docid: object) -> bool:
        return docid in self._row

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]:
        """The top min(k, ntotal) of each query, best first. Of the documents tied at the k-th score (duplicate
        passages have equal vectors) those trec_eval ranks first are kept, docid descending (`peft_ir.data.ranked`):
        the backends keep the lowest rows instead, so the cut would depend on corpus order and on sharding. One hit
        more than k shows a tie at the cut; such queries are searched deeper until the tied group is whole."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise MismatchError(f"queries of shape {queries.shape} against index {self.path} of dimension {self.dim}")
        n = len(self.docids)
        k = min(k, n)
        probe = min(k + 1, n)
        if probe > GPU_MAX_K >= k and self._torch is None and self.index is not self.cpu_index:
            probe = k  # one more would leave faiss-gpu for the CPU: at k = GPU_MAX_K a tie at the cut stays as found
        scores, rows = self._search_rows(queries, probe)
        if k < 1 or scores.shape[1] <= k:
            return scores, [[self.docids[r] for r in row if r >= 0] for row in rows]
        at_cut = (rows[:, k] >= 0) & (scores[:, k] == scores[:, k - 1])
        within = np.any(scores[:, 1:k] == scores[:, :k - 1], axis=1)  # ties above the cut: order them too
        scores, rows = scores[:, :k].copy(), rows[:, :k]
        ids = [[self.docids[r] for r in row if r >= 0] for row in rows]
        for i in np.flatnonzero(at_cut | within):  # rare: duplicate passages
            s, r = (self._whole_tie(queries[i:i + 1], float(scores[i, k - 1]), k + 1) if at_cut[i]
                    else (scores[i], rows[i]))
            hits = sorted(((float(x), self.docids[j]) for x, j in zip(s, r) if j >= 0), reverse=True)[:k]
            scores[i, :len(hits)] = [x for x, _ in hits]
            ids[i] = [d for _, d in hits]
        return scores, ids

    def _whole_tie(self, query: np.ndarray, cut: float, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """One query's hits, searched deeper until its last hit scores below `cut` (or the index is exhausted)."""
        n = len(self.docids)
        while True:
            depth = min(2 * depth, n)
            scores, rows = self._search_rows(query, depth)
            valid = rows[0] >= 0
            if depth == n or not valid.all() or scores[0][valid][-1] < cut:
                return scores[0], rows[0]

    def _search_rows(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The backend's top k: scores and rows (-1 past an approximate index's last hit)."""
        if self._torch is not None:
            scores, rows = self._torch.search(queries, k)
        elif k > GPU_MAX_K and self.index is not self.cpu_index:
            if not self._said_large_k:
                log.warning("%s: k=%d is more than faiss-gpu can return (%d): searching on CPU whenever k > %d",
                            self.path, k, GPU_MAX_K, GPU_MAX_K)
                self._said_large_k = True
            scores, rows = self.cpu_index.search(queries, k)
        else:
            scores, rows = self.index.search(queries, k)
        return scores, rows

    def vectors(self, docids: Sequence[str]) -> np.ndarray:
        """The stored vectors of `docids`, reconstructed from the CPU index: those rows only, whatever the backend."""
        try:
            rows = np.array([self._row[d] for d in docids], dtype=np.int64)
        except KeyError as exc:
            raise PeftIRError(f"document {exc.args[0]!r} is not in index {self.path}") from None
        if not len(rows):
            return np.zeros((0, self.dim), dtype=np.float32)
        if not self._direct_map:  # IVF reconstructs through a direct map, also behind a pre-transform
            ivf = _faiss().try_extract_index_ivf(self.cpu_index)
            if ivf is not None:
                ivf.make_direct_map()
            self._direct_map = True
        return np.asarray(self.cpu_index.reconstruct_batch(rows), dtype=np.float32)


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
    # an approximate shard (IVF, HNSW) can return fewer than k: rows are padded with -inf past their ids
    width = max((len(row) for row in all_scores), default=0)
    padded = np.full((len(all_scores), width), -np.inf, dtype=np.float32)
    for qi, row in enumerate(all_scores):
        padded[qi, :len(row)] = row
    return padded, all_ids
