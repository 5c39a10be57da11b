"""Vector pseudo-relevance feedback for dense retrieval (Rocchio; Li et al. 2021, as in Pyserini's dense PRF).

q' = alpha * q + beta * mean(embeddings of the top `fb_docs` passages retrieved for q), renormalised to unit
length when the index holds normalised vectors; then search again with q'. Defaults follow Pyserini's
(alpha 0.9, beta 0.1, 3 feedback passages).

The index is anything with the protocol below (`peft_ir.indexing.dense.DenseIndex` has it):

    index.search(queries: float32 (n, d), k) -> (scores (n, k), docids: list[list[str]])
    index.vectors(docids: list[str]) -> float32 (m, d)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from peft_ir.data.trec import Run
from peft_ir.errors import PeftIRError

DEFAULT_ALPHA = 0.9
DEFAULT_BETA = 0.1
DEFAULT_FB_DOCS = 3


class VectorIndex(Protocol):
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]: ...

    def vectors(self, docids: Sequence[str]) -> np.ndarray: ...


def l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms == 0, 1.0, norms)


def rocchio(queries: np.ndarray, feedback: Sequence[np.ndarray], alpha: float = DEFAULT_ALPHA,
            beta: float = DEFAULT_BETA, normalise: bool = False) -> np.ndarray:
    """New query vectors: alpha * q_i + beta * mean(feedback[i]) for each query i.

    `feedback[i]` is an (m_i, d) array of passage embeddings for query i; a query with m_i = 0 keeps its own
    vector (scaled by alpha, and renormalised if asked). Pure function: inputs are not modified.
    """
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim != 2:
        raise PeftIRError(f"query embeddings must be a 2-d array (n, d), got shape {q.shape}")
    if len(feedback) != len(q):
        raise PeftIRError(f"{len(feedback)} feedback sets for {len(q)} queries")
    out = alpha * q.astype(np.float64)
    for i, fb in enumerate(feedback):
        fb = np.asarray(fb, dtype=np.float64)
        if fb.size == 0:
            continue
        if fb.ndim != 2 or fb.shape[1] != q.shape[1]:
            raise PeftIRError(f"feedback for query {i} has shape {fb.shape}, expected (m, {q.shape[1]})")
        out[i] += beta * fb.mean(axis=0)
    if normalise:
        out = l2_normalise(out)
    return out.astype(np.float32)


def index_is_normalised(index: Any, queries: np.ndarray | None = None, atol: float = 1e-3) -> bool:
    """Whether the index holds unit vectors: its `normalized` attribute, its manifest's `normalize`, else
    whether the query vectors (which come from the same encoder) all have unit length."""
    flag = getattr(index, "normalized", None)
    if flag is None:
        manifest = getattr(index, "manifest", None)
        if isinstance(manifest, dict):
            flag = manifest.get("normalize")
    if flag is not None:
        return bool(flag)
    if queries is None or len(queries) == 0:
        return False
    norms = np.linalg.norm(np.asarray(queries, dtype=np.float64), axis=1)
    return bool(np.allclose(norms, 1.0, atol=atol))


def vector_prf_search(index: VectorIndex, query_embeddings: np.ndarray, k: int, fb_docs: int = DEFAULT_FB_DOCS,
                      alpha: float = DEFAULT_ALPHA, beta: float = DEFAULT_BETA,
                      normalise: bool | None = None) -> tuple[np.ndarray, list[list[str]]]:
    """First-pass search for `fb_docs` passages, Rocchio update, second-pass search for the top `k`.

    `normalise=None` renormalises q' exactly when the index holds normalised vectors (see `index_is_normalised`).
    Returns what `index.search` returns for the updated queries.
    """
    q = np.ascontiguousarray(query_embeddings, dtype=np.float32)
    if q.ndim != 2:
        raise PeftIRError(f"query embeddings must be a 2-d array (n, d), got shape {q.shape}")
    if k < 1 or fb_docs < 0:
        raise PeftIRError(f"vector PRF needs k >= 1 and fb_docs >= 0, got k={k}, fb_docs={fb_docs}")
    if normalise is None:
        normalise = index_is_normalised(index, q)
    if fb_docs == 0 or len(q) == 0:
        return index.search(q, k)
    _, first = index.search(q, fb_docs)
    wanted = sorted({d for row in first for d in row[:fb_docs]})
    table = dict(zip(wanted, index.vectors(wanted))) if wanted else {}
    dim = q.shape[1]
    feedback = [np.stack([table[d] for d in row[:fb_docs]]) if row else np.zeros((0, dim), np.float32)
                for row in first]
    return index.search(rocchio(q, feedback, alpha, beta, normalise), k)


def prf_run(qids: Sequence[str], result: tuple[np.ndarray, list[list[str]]]) -> Run:
    """A run {qid: {docid: score}} from a search result, queries in the order given."""
    scores, docids = result
    return {qid: {d: float(s) for d, s in zip(row_ids, row_scores)}
            for qid, row_scores, row_ids in zip(qids, scores, docids)}
