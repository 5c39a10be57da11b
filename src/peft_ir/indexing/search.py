"""Dense search: encode topics with the index's (checked) encoder, search the shards, return a run."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from peft_ir.data.trec import Run
from peft_ir.devices import device_for_process
from peft_ir.errors import MismatchError
from peft_ir.indexing.dense import DenseIndex, search_shards
from peft_ir.precision import ComputeDtype, torch_dtype
from peft_ir.retriever.encoder import BiEncoder, spec_from_manifest

log = logging.getLogger(__name__)


def load_shards(paths: Sequence[str | Path], device: str = "auto", nprobe: int | None = None,
                fp16: bool = False) -> list[DenseIndex]:
    """Load index shards (nprobe: for IVF shards, instead of the one each manifest records; device and fp16: see
    DenseIndex) and check they match."""
    shards = [DenseIndex(p, device=device, nprobe=nprobe, fp16=fp16) for p in paths]
    first = shards[0]
    for other in shards[1:]:
        if other.manifest.get("fingerprint") != first.manifest.get("fingerprint"):
            raise MismatchError(f"index shards built by different encoders: {first.path} "
                                f"({first.manifest.get('fingerprint')}) vs {other.path} ({other.manifest.get('fingerprint')})")
    for j, other in enumerate(shards[1:], start=1):  # a document in two shards would fill two of its query's hits
        for prev in shards[:j]:
            dup = next((d for d in other.docids if d in prev), None)
            if dup is not None:
                raise MismatchError(f"index shards overlap: document {dup!r} is in {prev.path} and in {other.path} "
                                    "(the same shard given twice?); give each part of the corpus once")
    return shards


def encoder_for(shards: Sequence[DenseIndex], model: str | None = None, adapter: str | None = None,
                dtype: ComputeDtype | None = None) -> BiEncoder:
    """The query encoder recorded in the index manifest, unless the user names another (then it is checked), computing
    in `dtype`, by default the corpus's (recorded in the manifest), so that queries and passages are encoded alike;
    a float16 corpus searched on the CPU, which has no float16 path, gets float32 queries. A precision other than the
    corpus's is allowed but logged, so that a run is not compared with one encoded alike without knowing."""
    spec = spec_from_manifest(shards[0].manifest, model)
    if adapter is not None:
        spec.adapter = adapter
    corpus_dtype = shards[0].manifest.get("compute_dtype", "float32")
    device = device_for_process()
    if dtype is None:
        dtype = "float32" if corpus_dtype == "float16" and device == "cpu" else corpus_dtype
    encoder = BiEncoder(spec, device=device, dtype=torch_dtype(dtype))
    shards[0].check_encoder(encoder.manifest())
    if corpus_dtype != encoder.compute_dtype:
        log.warning("queries are encoded in %s, the corpus of %s was encoded in %s: scores differ slightly from "
                    "encoding both alike (--dtype %s matches them)", encoder.compute_dtype, shards[0].path,
                    corpus_dtype, corpus_dtype)
    return encoder


def dense_search(encoder: BiEncoder, shards: Sequence[DenseIndex], topics: dict[str, str], hits: int = 1000,
                 batch_size: int = 64, progress: bool = True) -> Run:
    qids = list(topics)
    encoder.log_truncated(encoder.count_truncated(list(topics.values()), "query"), len(qids), "query")
    run: Run = {}
    for start in tqdm(range(0, len(qids), batch_size), desc="search", unit="batch", disable=not progress):
        batch = qids[start:start + batch_size]
        vecs = encoder.encode_queries([topics[q] for q in batch], batch_size=batch_size)
        scores, ids = search_shards(shards, vecs, hits)
        for qid, row_scores, row_ids in zip(batch, scores, ids):
            run[qid] = {d: float(s) for d, s in zip(row_ids, row_scores)}
    return run
