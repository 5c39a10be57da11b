"""The bi-encoder: one shared Hugging Face encoder with pooling, optional normalisation, and query/passage prefixes.

Built on sentence-transformers' `SentenceTransformer` so that encoding (length-sorted batches, padding to the
batch maximum) and training reuse a well-kept implementation; the PEFT methods act on its inner HF model.
A decoder (Llama, Qwen, Mistral) is pooled as RepLLaMA pools it: the tokenizer ends every text with its EOS token
(peft_ir.decoders) and sentence-transformers' `lasttoken` pooling takes the last real token by the attention mask,
whichever side the tokenizer pads on.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from peft_ir.decoders import append_eos, ends_with_eos, ensure_pad_token
from peft_ir.devices import device_for_process
from peft_ir.errors import PeftIRError
from peft_ir.fingerprint import base_fingerprint, file_hash
from peft_ir.models import attention_kwargs, loading_quietly, model_label, resolve_model
from peft_ir.precision import autocast, check_dtype
from peft_ir.retriever.config import EncoderSpec
from peft_ir.tuning import load_tuned, merge_tuned
from peft_ir.tuning.arch import is_causal

log = logging.getLogger(__name__)

TextKind = Literal["query", "passage"]


class BiEncoder:
    """Encode queries and passages into one vector space."""

    def __init__(self, spec: EncoderSpec, device: str | None = None, dtype: torch.dtype | None = None,
                 merge: bool = True):
        from sentence_transformers import SentenceTransformer  # noqa: PLC0415
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer  # noqa: PLC0415

        self.spec = spec
        path = resolve_model(spec.model)
        model_kwargs = attention_kwargs(spec.attn_implementation) or None
        device = device or device_for_process()
        check_dtype(dtype, device)  # before the model loads
        with loading_quietly():
            if (Path(path) / "modules.json").is_file():
                st = SentenceTransformer(path, device=device, model_kwargs=model_kwargs)
            else:
                transformer = Transformer(path, model_kwargs=model_kwargs)
                default = "lasttoken" if is_causal(transformer.auto_model.config) else "mean"
                st = SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension(),
                                                                       spec.pooling or default)], device=device)
        self.model = st
        self._configure_pooling_and_norm()
        self._configure_tokens()
        self._configure_lengths()
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
            self.adapter_hash = file_hash(Path(spec.adapter))
        self.autocast_dtype = dtype if device == "cpu" else None  # the CPU computes bfloat16 under autocast
        self.compute_dtype = str(dtype).removeprefix("torch.") if dtype is not None else "float32"
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

    def _configure_tokens(self) -> None:
        """A padding token where the tokenizer has none (Llama's); with last-token pooling, the EOS token after
        every text (`append_eos`), so that the pooled token has read the whole text and is alike for all texts."""
        tokenizer = self.model.tokenizer
        if tokenizer.pad_token is None:
            ensure_pad_token(tokenizer)
        append = self.spec.append_eos
        if append is None:
            append = self.spec.pooling == "lasttoken" and tokenizer.eos_token_id is not None \
                and not ends_with_eos(tokenizer)
        elif append and ends_with_eos(tokenizer):
            raise PeftIRError(f"the tokenizer of {self.spec.model} already ends every text with its EOS token; "
                              "leave append_eos unset")
        if append:
            append_eos(tokenizer)
        self.spec.append_eos = bool(append)

    def _configure_lengths(self) -> None:
        """Resolve the query limit and hand both limits to the Transformer module, which truncates `task="query"`
        and `task="document"` inputs at them: encoding, training and the dev evaluator then all cut alike."""
        if self.spec.query_max_length is None:
            if self.model.max_seq_length is None:
                raise PeftIRError(f"{self.spec.model or 'the model'} states no max_seq_length; set query_max_length")
            self.spec.query_max_length = int(self.model.max_seq_length)
        for name in ("query_max_length", "passage_max_length"):
            value = getattr(self.spec, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise PeftIRError(f"{name} must be a positive number of tokens, got {value!r}")
        transformer = self.model[0]
        transformer.query_length = self.spec.query_max_length
        transformer.document_length = self.spec.passage_max_length

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    # -- encoding ----------------------------------------------------------------------------------------
    def _encode(self, texts: list[str], prefix: str, task: str, batch_size: int, progress: bool) -> np.ndarray:
        with autocast("cpu", self.autocast_dtype):
            out = self.model.encode(texts, prompt=prefix or None, task=task, batch_size=batch_size,
                                    show_progress_bar=progress, convert_to_numpy=True)
        return np.asarray(out, dtype=np.float32)

    def encode_queries(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        return self._encode(texts, self.spec.query_prefix, "query", batch_size, progress)

    def encode_passages(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        return self._encode(texts, self.spec.passage_prefix, "document", batch_size, progress)

    def max_length(self, kind: TextKind) -> int:
        limit = self.spec.query_max_length if kind == "query" else self.spec.passage_max_length
        assert limit is not None  # resolved on load
        return limit

    def count_truncated(self, texts: list[str], kind: TextKind) -> int:
        """How many `texts` (prefix and special tokens included) are longer than the limit they are cut at."""
        prefix = self.spec.query_prefix if kind == "query" else self.spec.passage_prefix
        ids = self.model.tokenizer([prefix + t for t in texts], verbose=False, return_attention_mask=False,
                                   return_token_type_ids=False)["input_ids"]
        limit = self.max_length(kind)
        return sum(len(x) > limit for x in ids)

    def log_truncated(self, truncated: int, total: int, kind: TextKind, what: str | None = None) -> None:
        """Say how much text the limit cut (`what`: the stage, as a prefix): a silent cut of long queries costs
        effectiveness unnoticed."""
        log.info("%s%d of %d %s longer than %d tokens were truncated", f"{what}: " if what else "", truncated, total,
                 "queries" if kind == "query" else "passages", self.max_length(kind))

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
            "append_eos": self.spec.append_eos,
            "query_prefix": self.spec.query_prefix,
            "passage_prefix": self.spec.passage_prefix,
            "query_max_length": self.spec.query_max_length,
            "passage_max_length": self.spec.passage_max_length,
            "dim": self.dim,
        }


def spec_from_manifest(manifest: dict[str, Any], model: str | None = None) -> EncoderSpec:
    keys = {k for k in EncoderSpec.__dataclass_fields__} - {"model", "extra"}
    spec = EncoderSpec(**{k: manifest[k] for k in keys if k in manifest})
    spec.model = model if model is not None else manifest.get("model_path") or manifest.get("model")
    return spec


def spec_dict(spec: EncoderSpec) -> dict[str, Any]:
    return asdict(spec)
