"""The hashes that models, embeddings and texts are named and keyed by, in one module that needs nothing of peft-ir.

These values are stored: an adapter records its base's `base_fingerprint` (sha256_sampled), an embedding manifest
its `manifest_fingerprint`, a re-ranking score cache is named by `model_fingerprint` and keyed by `pair_hash`, a
dev corpus by `text_id`. Changing any of them orphans what was saved under the old value, so
tests/test_fingerprint.py pins each one on fixed inputs.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

BASE_SAMPLE = 1 << 16   # elements hashed per tensor at most, for a base model's fingerprint
MODEL_SAMPLE = 1 << 14  # the same for a whole (tuned) model's
# The manifest fields that change what vector a text gets (not paths or lengths, which the user may vary on purpose).
MANIFEST_KEYS = ("base_hash", "adapter_hash", "pooling", "normalize", "query_prefix", "passage_prefix", "dim")
# Added later: hashed only when set, so that the manifests written before them keep their fingerprint.
OPTIONAL_MANIFEST_KEYS = ("append_eos",)


def sampled_weights_sha256(params: Iterable[tuple[str, torch.Tensor]], sample: int, *, prefix: str = "",
                           widen: bool = False) -> str:
    """sha256 of `prefix`, then per tensor in name order: name, dtype, shape and the bytes of at most `sample`
    evenly strided elements, in the tensor's own dtype or, with `widen`, as float32.

    Cheap (milliseconds for BERT-base) and deterministic; any two differently trained models differ in the sample.
    """
    digest = hashlib.sha256(prefix.encode())
    for name, p in sorted(params, key=lambda item: item[0]):
        flat = p.detach().reshape(-1)
        step = max(1, math.ceil(flat.numel() / sample))
        picked = flat[::step].contiguous()
        digest.update(f"{name}|{p.dtype}|{tuple(p.shape)}|".encode())
        data = picked.float().cpu().numpy() if widen else picked.cpu().view(torch.uint8).numpy()
        digest.update(data.tobytes())
    return digest.hexdigest()


def base_fingerprint(model: nn.Module) -> str | None:
    """The sampled sha256 of an encoder's weights (a task head excluded: it is saved with the adapter), in their
    own dtype; None when the weights are not materialised (meta device)."""
    params = list(getattr(model, "base_model", model).named_parameters())
    if any(p.is_meta for _, p in params):
        return None
    return sampled_weights_sha256(params, BASE_SAMPLE)


def model_fingerprint(model: nn.Module, extra: str = "", sample: int = MODEL_SAMPLE) -> str:
    """The sampled sha256 of every parameter (base, added modules and head) as float32, after `extra`."""
    return sampled_weights_sha256(model.named_parameters(), sample, prefix=extra, widen=True)


def manifest_fingerprint(manifest: Mapping[str, Any]) -> str:
    """A short hash of an embedding manifest's MANIFEST_KEYS (and its OPTIONAL_MANIFEST_KEYS that are set): index and
    queries must agree on it."""
    keys = {k: manifest.get(k) for k in MANIFEST_KEYS}
    keys.update({k: manifest[k] for k in OPTIONAL_MANIFEST_KEYS if manifest.get(k)})
    payload = json.dumps(keys, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def file_hash(path: Path) -> str:
    """A short hash of a file, or of a folder's files (names and bytes, in path order)."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        h.update(p.name.encode())
        with open(p, "rb") as fh:  # in blocks: a corpus can be larger than memory
            while block := fh.read(1 << 20):
                h.update(block)
    return h.hexdigest()[:16]


def text_id(text: str) -> str:
    """A short id of a passage that has none (a training file's passages are bare texts)."""
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def pair_hash(query: str, passage: str) -> str:
    """A short hash of the pair's text: ids alone do not pin the text (rewritten queries, an edited corpus)."""
    return hashlib.sha1(f"{query}\x00{passage}".encode()).hexdigest()[:16]
