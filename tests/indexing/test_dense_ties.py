"""Documents tied at the k-th score (duplicate passages: equal vectors) are cut as trec_eval ranks them, docid
descending, whatever their rows and however the corpus is sharded: the backends alone keep the lowest rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fake_faiss_gpu import embeddings_folder, unit_vectors
from peft_ir.indexing.dense import DenseIndex, build_index, search_shards

DUPLICATES = [1, 3, 9, 10, 12]  # rows holding the same vector: docids d1 d3 d9 d10 d12, "d9" > "d3" > "d12" > ...


def _corpus() -> np.ndarray:
    vecs = unit_vectors(16, 8, seed=2) * 0.5  # every other document scores well below the duplicates
    vecs[DUPLICATES] = unit_vectors(1, 8, seed=3)[0]
    return vecs


@pytest.mark.parametrize("k", [1, 2, 3, 4, 7])
def test_the_cut_through_tied_documents_follows_trec_eval_order_on_one_shard_or_two(k: int, tmp_path: Path) -> None:
    vecs = _corpus()
    query = vecs[DUPLICATES[0]][None, :]
    tied = sorted((f"d{i}" for i in DUPLICATES), reverse=True)  # trec_eval's order among equal scores
    embeddings_folder(tmp_path / "emb", vecs)
    build_index(tmp_path / "emb", tmp_path / "flat", "Flat", progress=False)
    scores, ids = DenseIndex(tmp_path / "flat", device="cpu").search(query, k)
    assert ids[0][:min(k, len(tied))] == tied[:k]
    assert len(ids[0]) == k and np.all(np.diff(scores[0]) <= 0)
    for name, part, first in (("a", vecs[:8], 0), ("b", vecs[8:], 8)):
        embeddings_folder(tmp_path / f"emb-{name}", part, first=first)
        build_index(tmp_path / f"emb-{name}", tmp_path / f"idx-{name}", "Flat", progress=False)
    shards = [DenseIndex(tmp_path / f"idx-{name}", device="cpu") for name in ("a", "b")]
    assert search_shards(shards, query, k)[1] == ids  # sharding does not move the cut
