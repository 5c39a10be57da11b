"""The bi-encoder: one shared Hugging Face encoder with pooling, optional normalisation, and query/passage prefixes.

Built on sentence-transformers' `SentenceTransformer` so that encoding (length-sorted batches, padding to the
batch maximum) and training reuse a well-kept implementation; the PEFT methods act on its inner HF model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from peft_ir.errors import PeftIRError
from peft_ir.models import model_label, resolve_model
from peft_ir.tuning import base_fingerprint, load_tuned, merge_tuned

Pooling = Literal["mean", "cls"]


@dataclass
class EncoderSpec:
    """Everything that decides what vector a text gets; its fingerprint must match between index and queries."""

    model: str | None = None          # local path, hub name, or None for the embedded all-MiniLM-L6-v2
    pooling: Pooling | None = None     # None: as the sentence-transformers folder says (mean for MiniLM)
    normalize: bool | None = None      # None: as the folder says (True for MiniLM)
    query_prefix: str = ""
    passage_prefix: str = ""
    query_max_length: int = 64
    passage_max_length: int = 256
    adapter: str | None = None         # folder written by peft_ir.tuning.save_tuned
    extra: dict[str, Any] = field(default_factory=dict)


class BiEncoder:
    """Encode queries and passages into one vector space."""

    def __init__(self, spec: EncoderSpec, device: str | None = None, dtype: torch.dtype | None = None,
                 merge: bool = True):
        from sentence_transformers import SentenceTransformer  # noqa: PLC0415
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer  # noqa: PLC0415

        self.spec = spec
        path = resolve_model(spec.model)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if (Path(path) / "modules.json").is_file():
            st = SentenceTransformer(path, device=device)
        else:
            transformer = Transformer(path)
            st = SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension(), spec.pooling or "mean")],
                                     device=device)
        self.model = st
        self._configure_pooling_and_norm()
        self.base_hash = base_fingerprint(self.hf_model)
        self.adapter_hash: str | None = None
        if spec.adapter:
            tuned = load_tuned(self.hf_model, spec.adapter)
            if merge:
                try:  # LoRA/BitFit: the same outputs at the base model's speed
                    tuned = merge_tuned(tuned)
                except PeftIRError:
                    pass  # adapters, prefixes and aside modules have no merge: they run as added modules
            self._set_hf_model(tuned)
            self.adapter_hash = _file_hash(Path(spec.adapter))
        if dtype is not None and device != "cpu":
            st.to(dtype)
        st.eval()

    # -- the HF model that PEFT methods act on --------------------------------------------------------------
    @property
    def hf_model(self) -> torch.nn.Module:
        return self.model[0].auto_model

    def _set_hf_model(self, module: torch.nn.Module) -> None:
        self.model[0].auto_model = module

    def _configure_pooling_and_norm(self) -> None:
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling  # noqa: PLC0415

        modules = list(self.model)
        pooling = next(m for m in modules if isinstance(m, Pooling))
        if self.spec.pooling is not None and pooling.pooling_mode != self.spec.pooling:
            idx = modules.index(pooling)
            self.model._modules[str(idx)] = Pooling(pooling.get_embedding_dimension(), self.spec.pooling)
        has_norm = any(isinstance(m, Normalize) for m in modules)
        if self.spec.normalize is True and not has_norm:
            self.model.append(Normalize())
        elif self.spec.normalize is False and has_norm:
            keep = [m for m in modules if not isinstance(m, Normalize)]
            self.model._modules.clear()
            for i, m in enumerate(keep):
                self.model._modules[str(i)] = m
        self.spec.pooling = next(m for m in self.model if isinstance(m, Pooling)).pooling_mode
        self.spec.normalize = any(isinstance(m, Normalize) for m in self.model)

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    # -- encoding ----------------------------------------------------------------------------------------
    def _encode(self, texts: list[str], prefix: str, max_length: int, batch_size: int, progress: bool) -> np.ndarray:
        self.model.max_seq_length = max_length
        out = self.model.encode(texts, prompt=prefix or None, batch_size=batch_size, show_progress_bar=progress,
                                convert_to_numpy=True)
        return np.asarray(out, dtype=np.float32)

    def encode_queries(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        return self._encode(texts, self.spec.query_prefix, self.spec.query_max_length, batch_size, progress)

    def encode_passages(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        return self._encode(texts, self.spec.passage_prefix, self.spec.passage_max_length, batch_size, progress)

    # -- identity ----------------------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        """What the index records about its encoder; queries must be encoded by a matching one."""
        return {
            "model": model_label(self.spec.model),
            "model_path": self.spec.model,
            "base_hash": self.base_hash,
            "adapter": self.spec.adapter and str(self.spec.adapter),
            "adapter_hash": self.adapter_hash,
            "pooling": self.spec.pooling,
            "normalize": self.spec.normalize,
            "query_prefix": self.spec.query_prefix,
            "passage_prefix": self.spec.passage_prefix,
            "query_max_length": self.spec.query_max_length,
            "passage_max_length": self.spec.passage_max_length,
            "dim": self.dim,
        }


FINGERPRINT_KEYS = ("base_hash", "adapter_hash", "pooling", "normalize", "query_prefix", "passage_prefix", "dim")


def fingerprint(manifest: dict[str, Any]) -> str:
    """A short hash of the fields that change vectors (not paths or lengths, which the user may vary on purpose)."""
    payload = json.dumps({k: manifest.get(k) for k in FINGERPRINT_KEYS}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _file_hash(folder: Path) -> str:
    h = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else [folder]
    for p in files:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def spec_from_manifest(manifest: dict[str, Any], model: str | None = None) -> EncoderSpec:
    keys = {k for k in EncoderSpec.__dataclass_fields__} - {"model", "extra"}
    spec = EncoderSpec(**{k: manifest[k] for k in keys if k in manifest})
    spec.model = model if model is not None else manifest.get("model_path") or manifest.get("model")
    return spec


def spec_dict(spec: EncoderSpec) -> dict[str, Any]:
    return asdict(spec)
