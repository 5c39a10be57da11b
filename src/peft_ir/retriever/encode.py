"""Corpus encoding in chunks that survive interruption, shardable across independent processes.

Chunk k holds documents [k*chunk_size, (k+1)*chunk_size) of the corpus order; shard i of n encodes the chunks
with k % n == i. Each chunk is one `.npz` (embeddings + ids) written under a temporary name and renamed, so a
re-run skips finished chunks and never trusts a partial one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from peft_ir.atomic import atomic_open, atomic_path
from peft_ir.data.beir import Document
from peft_ir.devices import log_device
from peft_ir.errors import MismatchError, PeftIRError
from peft_ir.fingerprint import manifest_fingerprint
from peft_ir.retriever.config import ENCODER_SPEC_FILE
from peft_ir.retriever.encoder import BiEncoder

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def chunk_path(out_dir: Path, k: int) -> Path:
    return out_dir / "chunks" / f"chunk-{k:06d}.npz"


def _chunks(docs: Iterable[Document], size: int) -> Iterator[list[Document]]:
    it = iter(docs)
    while batch := list(islice(it, size)):
        yield batch


# What a folder's chunks must share besides the encoder's fingerprint and dtype: the chunking (a chunk is skipped
# by its number, so another size would duplicate or drop documents) and the passage length limit (lengths are
# left out of the fingerprint, since queries may vary theirs, but one index must not mix two passage cuts).
RESUME_KEYS = ("chunk_size", "passage_limit")


def _check_encoder(out_dir: Path, manifest: dict) -> None:
    """Refuse to mix chunks from two encoders, two chunkings or two passage cuts in one folder."""
    path = out_dir / ENCODER_SPEC_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("compute_dtype", "float32") != manifest["compute_dtype"]:
            raise MismatchError(f"{out_dir} holds embeddings computed in {old.get('compute_dtype', 'float32')}, not "
                                f"{manifest['compute_dtype']}: resume with the same dtype, or use another --output")
        if old.get("fingerprint") != manifest["fingerprint"]:
            raise MismatchError(f"{out_dir} holds embeddings from encoder {old.get('model')} "
                                f"(fingerprint {old.get('fingerprint')}), not from {manifest['model']} "
                                f"(fingerprint {manifest['fingerprint']}); use another --output")
        for key in RESUME_KEYS:  # folders written before a key was recorded are not checked on it
            if key in old and old[key] != manifest[key]:
                flag = "--chunk-size" if key == "chunk_size" else "--passage-max-length"
                raise MismatchError(f"{out_dir} holds chunks encoded with {key} {old[key]}, not {manifest[key]}: "
                                    f"resume with the same {flag}, or use another --output")
    else:
        with atomic_open(path) as fh:
            json.dump(manifest, fh, indent=2)


def _check_chunk(path: Path, chunk: list[Document]) -> None:
    """A finished chunk is skipped only if it holds this chunk's documents: the corpus may have changed since."""
    with np.load(path, allow_pickle=False) as z:
        ids = [str(x) for x in z["ids"]]
    expected = [d.id for d in chunk]
    if ids != expected:
        i = next((i for i, (a, b) in enumerate(zip(ids, expected)) if a != b), min(len(ids), len(expected)))
        got = ids[i] if i < len(ids) else "(end)"
        want = expected[i] if i < len(expected) else "(end)"
        raise MismatchError(f"{path} holds other documents than this corpus's chunk {path.stem.split('-')[-1]} "
                            f"(document {i + 1} of it: {got!r}, the corpus has {want!r}): the corpus changed since "
                            "it was written; use another --output")


def encode_corpus(encoder: BiEncoder, docs: Iterable[Document], out_dir: str | Path, *, shard_id: int = 0,
                  num_shards: int = 1, chunk_size: int = 4096, batch_size: int = 64, total: int | None = None,
                  progress: bool = True) -> dict:
    """Encode this shard's chunks (skipping finished ones) and return the manifest once the whole corpus is seen."""
    if not 0 <= shard_id < num_shards:
        raise PeftIRError(f"--shard-id must be in [0, {num_shards}), got {shard_id}")
    out_dir = Path(out_dir)
    (out_dir / "chunks").mkdir(parents=True, exist_ok=True)
    for stale in (out_dir / "chunks").glob(".chunk-*.npz.tmp-*"):  # this shard's, left by a process killed mid-write
        if int(stale.name[len(".chunk-"):].split(".", 1)[0]) % num_shards == shard_id:
            stale.unlink(missing_ok=True)
    manifest = encoder.manifest()
    manifest["fingerprint"] = manifest_fingerprint(manifest)
    manifest["compute_dtype"] = encoder.compute_dtype  # provenance, outside the fingerprint: queries may differ
    manifest.update(chunk_size=chunk_size, passage_limit=encoder.max_length("passage"))
    _check_encoder(out_dir, manifest)
    log_device("encoding", encoder.model.device)

    n_docs = 0
    n_chunks = 0
    done = skipped = truncated = encoded = 0
    bar = tqdm(total=total, unit="doc", desc=f"encode shard {shard_id}/{num_shards}", disable=not progress)
    for k, chunk in enumerate(_chunks(docs, chunk_size)):
        n_docs += len(chunk)
        n_chunks = k + 1
        if k % num_shards != shard_id:
            bar.update(len(chunk))
            continue
        path = chunk_path(out_dir, k)
        if path.is_file():
            _check_chunk(path, chunk)
            skipped += 1
            bar.update(len(chunk))
            continue
        texts = [d.joined() for d in chunk]
        truncated += encoder.count_truncated(texts, "passage")
        encoded += len(texts)
        step = batch_size * 16  # length-sorted within each slice; slices keep the progress bar moving
        parts = []
        for start in range(0, len(texts), step):
            parts.append(encoder.encode_passages(texts[start:start + step], batch_size=batch_size))
            bar.update(len(parts[-1]))
        vectors = np.concatenate(parts)
        with atomic_path(path, sweep=False) as tmp:  # stale chunk temporaries were swept above
            with open(tmp, "wb") as fh:
                np.savez(fh, embeddings=vectors, ids=np.array([d.id for d in chunk]))
        done += 1
    bar.close()
    if n_docs == 0:
        raise PeftIRError("the corpus is empty")
    log.info("shard %d/%d: encoded %d chunk(s), %d already done", shard_id, num_shards, done, skipped)
    if encoded:
        encoder.log_truncated(truncated, encoded, "passage")
    manifest.update({"num_docs": n_docs, "num_chunks": n_chunks, "dtype": "float32"})
    with atomic_open(out_dir / MANIFEST) as fh:
        json.dump(manifest, fh, indent=2)
    return manifest


def read_manifest(emb_dir: str | Path) -> dict:
    path = Path(emb_dir) / MANIFEST
    if not path.is_file():
        raise PeftIRError(f"{emb_dir}: no {MANIFEST}; encoding has not finished (run `peft-ir encode` to completion)")
    return json.loads(path.read_text())


def iter_embeddings(emb_dir: str | Path) -> Iterator[tuple[np.ndarray, list[str]]]:
    """Yield (embeddings, ids) chunk by chunk in corpus order; fails if any chunk is missing."""
    emb_dir = Path(emb_dir)
    manifest = read_manifest(emb_dir)
    missing = [k for k in range(manifest["num_chunks"]) if not chunk_path(emb_dir, k).is_file()]
    if missing:
        raise PeftIRError(f"{emb_dir}: {len(missing)} of {manifest['num_chunks']} chunks missing (e.g. {missing[0]}); "
                          "run the remaining `peft-ir encode --shard-id` processes first")
    rows = 0
    for k in range(manifest["num_chunks"]):
        with np.load(chunk_path(emb_dir, k), allow_pickle=False) as z:
            vectors, ids = z["embeddings"], [str(x) for x in z["ids"]]
        rows += len(ids)
        yield vectors, ids
    if rows != manifest["num_docs"]:  # chunks of two chunkings (folders from before chunk_size was checked)
        raise PeftIRError(f"{emb_dir}: the chunks hold {rows} documents, the manifest says {manifest['num_docs']}; "
                          "encode again into a new folder")
