"""The cross-encoder: an encoder or a decoder with a one-logit sequence-classification head, scored in batches.

Built with plain transformers (`AutoModelForSequenceClassification`, num_labels=1) rather than
sentence-transformers' CrossEncoder: the tuning methods act on the HF model directly, and query and passage get
separate token limits, which CrossEncoder's single max_length cannot express. Each side is cut at its own limit
first, then the tokenizer's own pair template joins them (BERT: [CLS] q [SEP] p [SEP]; RoBERTa: <s> q </s></s> p
</s>; Llama: <s> q <s> p). From a sentence-transformers bi-encoder folder (the default all-MiniLM-L6-v2) the
encoder weights are loaded and the head is new, initialised from `seed`.

With `head: cosine` (CrossEncoderSpec) the model is the bare encoder (AutoModel) and a pair's score is
COSINE_SCALE x the cosine of its mean query-token and mean passage-token states (the template's special tokens
are in neither segment): no new weights, so that a cross-encoder built on a bi-encoder
checkpoint starts from what the bi-encoder learnt instead of from a random head (results/rerank-head.md). With
`cross_attention: gated` each text is laid out in its own template, its special tokens counted in its segment (as
the bi-encoder's mean pooling counts them), and the model starts as exactly the bi-encoder (reranker/gated.py).

A decoder (Llama, Qwen, Mistral) is scored as RankLLaMA scores it: the pair ends with the tokenizer's EOS token
and transformers' head reads the last token that is not padding, on either padding side; the pad token is made to
differ from the EOS (peft_ir.decoders.ensure_pad_token) so that this last token is the EOS.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from peft_ir.decoders import append_eos, ends_with_eos, ensure_pad_token
from peft_ir.devices import device_for_process
from peft_ir.errors import MismatchError, PeftIRError
from peft_ir.fingerprint import model_fingerprint
from peft_ir.models import attention_kwargs, loading_quietly, resolve_model
from peft_ir.precision import autocast, check_dtype
from peft_ir.reranker import gated
from peft_ir.reranker.config import COSINE_SCALE, CrossEncoderSpec, recorded_spec
from peft_ir.tuning.arch import is_causal

log = logging.getLogger(__name__)


def load_base(spec: CrossEncoderSpec, device: str | None = None):  # type: ignore[no-untyped-def]
    """(model, tokenizer): AutoModelForSequenceClassification(num_labels=1) with a seeded new head, eval mode; the bare
    AutoModel for the cosine head."""
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer  # noqa: PLC0415

    spec.check()
    path = resolve_model(spec.model)
    load_kwargs = gated.load_kwargs() if spec.gated else attention_kwargs(spec.attn_implementation)
    if not Path(path).exists() and "/" not in path:
        raise PeftIRError(f"model {spec.model!r} is neither a folder nor a hub name")
    if spec.gated:
        from transformers import AutoConfig  # noqa: PLC0415

        gated.check_supported(AutoConfig.from_pretrained(path))
    try:  # "some weights were newly initialised" is expected: the head is new
        with loading_quietly(errors_only=True), torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            if spec.classifies:
                model, info = AutoModelForSequenceClassification.from_pretrained(
                    path, num_labels=1, output_loading_info=True, **load_kwargs)
            else:
                model, info = AutoModel.from_pretrained(path, output_loading_info=True, **load_kwargs)
            tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise PeftIRError(f"cannot load cross-encoder base {path}: {exc}") from exc
    if spec.classifies:
        model.config.problem_type = "regression"
    if spec.gated:
        gated.add_gates(model)
    if is_causal(model.config):
        if tokenizer.eos_token_id is None:
            raise PeftIRError(f"the tokenizer of {path} has no EOS token, which a decoder re-ranker ends pairs with")
        model.config.pad_token_id = ensure_pad_token(tokenizer, distinct_from_eos=True)
        model.config.use_cache = False  # scores only: no key/value cache to keep
    model.peft_ir_pooler_pretrained = spec.classifies and _pooler_pretrained(model, path, info["missing_keys"])
    model.eval()
    return model.to(device or device_for_process()), tokenizer


def _head_hint(adapter: Path, spec: CrossEncoderSpec) -> str:
    """What to change when an adapter does not fit: the head its training recorded beside it, if another."""
    try:
        found = recorded_spec(adapter)
    except PeftIRError:
        return ""
    if found is None:
        return ""
    path, recorded = found
    if recorded.head != spec.head:
        return f"; {path} says it was trained with the {recorded.head} head: give --head {recorded.head}"
    if recorded.cross_attention != spec.cross_attention:
        return (f"; {path} says it was trained with {recorded.cross_attention} cross attention: give "
                f"--cross-attention {recorded.cross_attention}")
    return ""


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

    def __init__(self, spec: CrossEncoderSpec, adapter: str | Path | None = None, device: str | None = None,
                 dtype: torch.dtype | None = None):
        self.spec = spec
        device = device or device_for_process()
        check_dtype(dtype, device)  # before the model loads
        self.model, self.tokenizer = load_base(spec, device)
        self.dtype = dtype  # scoring runs under autocast to it (peft_ir.precision); the weights stay as loaded
        self.adapter = str(adapter) if adapter else None
        self.pooler_pretrained: bool = self.model.peft_ir_pooler_pretrained  # see _pooler_pretrained
        if adapter:
            from peft_ir.tuning import load_tuned  # noqa: PLC0415

            try:
                self.model = load_tuned(self.model, adapter)
            except MismatchError as exc:
                raise MismatchError(f"{exc}{_head_hint(Path(adapter), spec)}") from None
            self.model.eval()
        self._token_types = "token_type_ids" in getattr(self.tokenizer, "model_input_names", [])
        self._pairs = _pair_tokenizer(self.tokenizer, eos=is_causal(self.model.config))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def fingerprint(self) -> str:
        """A sampled sha256 over every parameter (base, added modules and head) plus the token limits, the head and
        the compute precision where they are not the defaults."""
        extra = f"{self.spec.query_max_length}/{self.spec.passage_max_length}"
        if self.spec.query_prefix or self.spec.passage_prefix:
            extra += f"/{self.spec.query_prefix!r}/{self.spec.passage_prefix!r}"
        if not self.spec.classifies:
            extra += f"/{self.spec.head}"
        if self.spec.gated:
            extra += "/gated"
        if self.dtype is not None:  # scores computed in another precision are other scores (the score cache's key)
            extra += f"/{self.dtype}"
        return model_fingerprint(self.model, extra)

    # --- tokenisation ---------------------------------------------------------------------------------------
    def pair_ids(self, queries: Sequence[str], passages: Sequence[str]) -> list[tuple[list[int], list[int], list[int]]]:
        """Token ids (input_ids, token_type_ids, segments) of each pair: query and passage (each after its prefix) cut
        at their own limits, then joined by the tokenizer's pair template (with the EOS after it for a decoder);
        segments marks each token 1 (query), 2 (passage) or 0 (a special token of the template). Gated: each text
        in the single-text template, one after the other, its special tokens in its own segment."""
        spec, tok = self.spec, self._pairs
        q_enc = tok.encode_batch([spec.query_prefix + q for q in queries], add_special_tokens=False)
        p_enc = tok.encode_batch([spec.passage_prefix + p for p in passages], add_special_tokens=False)
        out = []
        for q, p in zip(q_enc, p_enc):
            q.truncate(spec.query_max_length)
            p.truncate(spec.passage_max_length)
            if spec.gated:  # each text in its own template, as the bi-encoder reads it (reranker/gated.py)
                q_ids = tok.post_process(q, add_special_tokens=True).ids
                p_ids = tok.post_process(p, add_special_tokens=True).ids
                out.append((q_ids + p_ids, [0] * (len(q_ids) + len(p_ids)), [1] * len(q_ids) + [2] * len(p_ids)))
                continue
            pair = tok.post_process(q, p, add_special_tokens=True)
            out.append((pair.ids, pair.type_ids, _segments(pair.special_tokens_mask, len(q.ids))))
        return out

    def log_truncated(self, queries: Sequence[str], passages: Sequence[str], what: str) -> None:
        """Say how many of the distinct queries and passages their limit cuts: a silent cut costs effectiveness
        unnoticed (at 128 tokens a typical SciFact abstract, 314 tokens, keeps under half its text)."""
        spec = self.spec
        for kind, texts, prefix, limit in (("queries", queries, spec.query_prefix, spec.query_max_length),
                                           ("passages", passages, spec.passage_prefix, spec.passage_max_length)):
            unique = list(dict.fromkeys(texts))
            if unique:
                enc = self._pairs.encode_batch([prefix + t for t in unique], add_special_tokens=False)
                cut = sum(len(e.ids) > limit for e in enc)
                log.info("%s: %d of %d distinct %s longer than %d tokens were truncated", what, cut, len(unique),
                         kind, limit)

    def collate(self, items: Sequence[tuple[list[int], list[int], list[int]]]) -> dict[str, torch.Tensor]:
        """Pad to the longest pair of this batch only, on the tokenizer's padding side, built in one scatter rather
        than row by row: the mask of real tokens, in row-major order, is exactly where the concatenated ids go."""
        lengths = torch.tensor([len(ids) for ids, _, _ in items])
        width = int(lengths.max())
        if self.tokenizer.padding_side == "left":
            mask = torch.arange(width) >= (width - lengths)[:, None]
        else:
            mask = torch.arange(width) < lengths[:, None]
        ids = torch.full(mask.shape, self.tokenizer.pad_token_id or 0, dtype=torch.long)
        ids[mask] = torch.tensor([i for x, _, _ in items for i in x], dtype=torch.long)
        batch = {"input_ids": ids, "attention_mask": mask.long()}
        if self._token_types:
            types = torch.zeros(mask.shape, dtype=torch.long)
            types[mask] = torch.tensor([i for _, t, _ in items for i in t], dtype=torch.long)
            batch["token_type_ids"] = types
        if not self.spec.classifies:
            segments = torch.zeros(mask.shape, dtype=torch.long)
            segments[mask] = torch.tensor([i for _, _, g in items for i in g], dtype=torch.long)
            batch["segments"] = segments
            if self.spec.gated:
                batch["position_ids"] = gated.restarted_positions(segments, gated.first_position(self.model.config))
        return batch

    # --- scoring --------------------------------------------------------------------------------------------
    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        device = self.device
        if device.type == "cuda":  # from page-locked memory the copy is faster and does not block the host
            batch = {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
        else:
            batch = {k: v.to(device) for k, v in batch.items()}
        return self.forward_scores(self.model, batch)

    def forward_scores(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scores of a collated batch through `model` (this encoder's model, or the trainer's wrapping of it):
        gated cross attention reads the segments in every layer, the cosine head after the last."""
        inputs = dict(batch)
        segments = inputs.pop("segments", None)
        if self.spec.gated:
            inputs["segments"] = segments
        return self.read_scores(model(**inputs), segments)

    def read_scores(self, outputs: Any, segments: torch.Tensor | None) -> torch.Tensor:
        """One score per pair from the model's outputs: the head's logit, or the cosine of the pair's segments (the
        batch's `segments`, which only a gated model's attention also reads)."""
        if self.spec.classifies:
            return outputs.logits[:, 0]
        assert segments is not None, "the cosine head reads the batch's segments (collate builds them)"
        return segment_cosine(outputs.last_hidden_state, segments)

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
            with torch.inference_mode(), autocast(self.device, self.dtype):
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


def _segments(special: list[int], query_tokens: int) -> list[int]:
    """1 for the query's tokens, 2 for the passage's, 0 for the template's special tokens: every template keeps the
    query's tokens before the passage's (the pair's sequence_ids cannot say: tokenizers loses the first sequence's)."""
    out, seen = [], 0
    for is_special in special:
        if is_special:
            out.append(0)
        else:
            out.append(1 if seen < query_tokens else 2)
            seen += 1
    return out


def segment_cosine(states: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """COSINE_SCALE x cos(mean query-token state, mean passage-token state) per pair, in float32 (segments: 1 query,
    2 passage, 0 neither; an empty segment gives the zero vector, hence cosine 0)."""
    states = states.float()
    query = (segments == 1).unsqueeze(-1).float()
    passage = (segments == 2).unsqueeze(-1).float()
    q = (states * query).sum(1) / query.sum(1).clamp(min=1.0)
    p = (states * passage).sum(1) / passage.sum(1).clamp(min=1.0)
    return COSINE_SCALE * torch.nn.functional.cosine_similarity(q, p, dim=-1)


def _pair_tokenizer(tokenizer: Any, eos: bool) -> Any:
    """A copy of the tokenizer's own `tokenizers` pipeline (normaliser, model, pair template), without the length
    limit or padding it was saved with: pair_ids cuts each side itself, then applies the template; with `eos`, the
    template ends pairs with the EOS token (unless it already does)."""
    from tokenizers import Tokenizer  # noqa: PLC0415

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise PeftIRError(f"the tokenizer of {tokenizer.name_or_path} is not a fast (tokenizers) one")
    if eos and not ends_with_eos(tokenizer):
        import copy  # noqa: PLC0415

        tokenizer = copy.deepcopy(tokenizer)
        append_eos(tokenizer)
        backend = tokenizer.backend_tokenizer
    own = Tokenizer.from_str(backend.to_str())
    own.no_truncation()
    own.no_padding()
    return own


def describe_spec(spec: CrossEncoderSpec) -> dict[str, Any]:
    from peft_ir.models import model_label  # noqa: PLC0415

    return {"model": model_label(spec.model), "query_max_length": spec.query_max_length,
            "passage_max_length": spec.passage_max_length, "seed": spec.seed}
