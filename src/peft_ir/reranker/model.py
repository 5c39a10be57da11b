"""The cross-encoder: a BERT-family encoder with a one-logit sequence-classification head, scored in batches.

Built with plain transformers (`AutoModelForSequenceClassification`, num_labels=1) rather than
sentence-transformers' CrossEncoder: the tuning methods act on the HF model directly, and query and passage get
separate token limits ([CLS] q[:query_max] [SEP] p[:passage_max] [SEP]), which CrossEncoder's single max_length
cannot express. From a sentence-transformers bi-encoder folder (the default all-MiniLM-L6-v2) the encoder weights
are loaded and the head is new, initialised from `seed`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from peft_ir.devices import device_for_process
from peft_ir.errors import PeftIRError
from peft_ir.fingerprint import model_fingerprint
from peft_ir.models import resolve_model
from peft_ir.reranker.config import CrossEncoderSpec

log = logging.getLogger(__name__)

_DOUBLE_SEP = {"roberta", "xlm-roberta", "camembert", "longformer", "mpnet", "bart"}


def load_base(spec: CrossEncoderSpec, device: str | None = None):  # type: ignore[no-untyped-def]
    """(model, tokenizer): AutoModelForSequenceClassification(num_labels=1) with a seeded new head, eval mode."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: PLC0415
    from transformers.utils import logging as hf_logging  # noqa: PLC0415

    path = resolve_model(spec.model)
    if not Path(path).exists() and "/" not in path:
        raise PeftIRError(f"model {spec.model!r} is neither a folder nor a hub name")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "some weights were newly initialised" is expected: the head is new
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            model, info = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1,
                                                                             output_loading_info=True)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise PeftIRError(f"cannot load cross-encoder base {path}: {exc}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    model.config.problem_type = "regression"
    model.peft_ir_pooler_pretrained = _pooler_pretrained(model, path, info["missing_keys"])
    model.eval()
    return model.to(device or device_for_process()), tokenizer


def _pooler_pretrained(model: torch.nn.Module, path: str, missing_keys: Sequence[str]) -> bool:
    """Whether the model's pooler carries trained weights: loaded from the checkpoint, and the checkpoint is not a
    sentence-transformers folder (whose training pools token states and never touches the pooler, as MiniLM's)."""
    pooler = getattr(getattr(model, "base_model", model), "pooler", None)
    if not isinstance(pooler, torch.nn.Module) or not any(True for _ in pooler.parameters()):
        return False
    if any(".pooler." in f".{key}" for key in missing_keys):
        return False
    return not (Path(path) / "modules.json").is_file()


class CrossEncoder:
    """Scores (query, passage) pairs with a (possibly tuned) sequence-classification model."""

    def __init__(self, spec: CrossEncoderSpec, adapter: str | Path | None = None, device: str | None = None):
        self.spec = spec
        self.model, self.tokenizer = load_base(spec, device)
        self.adapter = str(adapter) if adapter else None
        self.pooler_pretrained: bool = self.model.peft_ir_pooler_pretrained  # see _pooler_pretrained
        if adapter:
            from peft_ir.tuning import load_tuned  # noqa: PLC0415

            self.model = load_tuned(self.model, adapter)
            self.model.eval()
        self._double_sep = getattr(self.model.config, "model_type", "") in _DOUBLE_SEP
        self._token_types = "token_type_ids" in getattr(self.tokenizer, "model_input_names", [])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def fingerprint(self) -> str:
        """A sampled sha256 over every parameter (base, added modules and head) plus the token limits."""
        return model_fingerprint(self.model, f"{self.spec.query_max_length}/{self.spec.passage_max_length}")

    # --- tokenisation ---------------------------------------------------------------------------------------
    def pair_ids(self, queries: Sequence[str], passages: Sequence[str]) -> list[tuple[list[int], list[int]]]:
        """Token ids (input_ids, token_type_ids) of each pair, query and passage truncated separately."""
        tok = self.tokenizer
        q_ids = tok(list(queries), add_special_tokens=False, truncation=True,
                    max_length=self.spec.query_max_length)["input_ids"]
        p_ids = tok(list(passages), add_special_tokens=False, truncation=True,
                    max_length=self.spec.passage_max_length)["input_ids"]
        cls, sep = tok.cls_token_id, tok.sep_token_id
        if cls is None or sep is None:
            raise PeftIRError(f"tokenizer of {self.spec.model} has no CLS/SEP tokens; a BERT-family model is needed")
        out = []
        for q, p in zip(q_ids, p_ids):
            first = [cls, *q, sep] + ([sep] if self._double_sep else [])
            second = [*p, sep]
            out.append((first + second, [0] * len(first) + [1] * len(second)))
        return out

    def collate(self, items: Sequence[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        """Pad to the longest pair of this batch only (right padding), built in one scatter rather than row by row:
        the mask of real tokens, in row-major order, is exactly where the concatenated ids go."""
        lengths = torch.tensor([len(ids) for ids, _ in items])
        mask = torch.arange(int(lengths.max())) < lengths[:, None]
        ids = torch.full(mask.shape, self.tokenizer.pad_token_id or 0, dtype=torch.long)
        ids[mask] = torch.tensor([i for x, _ in items for i in x], dtype=torch.long)
        batch = {"input_ids": ids, "attention_mask": mask.long()}
        if self._token_types:
            types = torch.zeros(mask.shape, dtype=torch.long)
            types[mask] = torch.tensor([i for _, t in items for i in t], dtype=torch.long)
            batch["token_type_ids"] = types
        return batch

    # --- scoring --------------------------------------------------------------------------------------------
    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        device = self.device
        if device.type == "cuda":  # from page-locked memory the copy is faster and does not block the host
            batch = {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
        else:
            batch = {k: v.to(device) for k, v in batch.items()}
        return self.model(**batch).logits[:, 0]

    def score(self, queries: Sequence[str], passages: Sequence[str], batch_size: int = 32,
              on_batch: Callable[[list[int], list[float]], None] | None = None) -> list[float]:
        """Scores in input order; batches are formed from pairs sorted by length (least padding).

        `on_batch(indices, scores)` is called after every batch (the re-ranker appends them to its cache).
        """
        if len(queries) != len(passages):
            raise PeftIRError(f"{len(queries)} queries but {len(passages)} passages")
        items = self.pair_ids(queries, passages)
        order = sorted(range(len(items)), key=lambda i: (-len(items[i][0]), i))
        scores = [math.nan] * len(items)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, len(order), max(1, batch_size)):
                    idx = order[start:start + batch_size]
                    values = self.logits(self.collate([items[i] for i in idx])).float().cpu().tolist()
                    for i, v in zip(idx, values):
                        scores[i] = v
                    if on_batch is not None:
                        on_batch(idx, values)
        finally:
            self.model.train(was_training)
        return scores


def describe_spec(spec: CrossEncoderSpec) -> dict[str, Any]:
    from peft_ir.models import model_label  # noqa: PLC0415

    return {"model": model_label(spec.model), "query_max_length": spec.query_max_length,
            "passage_max_length": spec.passage_max_length, "seed": spec.seed}
