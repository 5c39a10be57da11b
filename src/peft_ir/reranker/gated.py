"""Gated cross attention: a cross-encoder that starts as exactly the bi-encoder it is built on.

A pair is laid out as two texts side by side, each in the tokenizer's own single-text template ([CLS] q [SEP] [CLS]
p [SEP] for BERT), token type 0 throughout and positions restarting at the passage, as the bi-encoder reads each
text alone. Every self-attention layer computes two attentions from the same queries, keys and values: `within`, each
token over its own text only (what the bi-encoder computes), and `joint`, over the whole pair (what a cross-encoder
computes), and mixes them per head:

    out = within + g * (joint - within),        g = 0 at the start (CrossGate, one value per head and layer)

With every g = 0 the two texts never see each other, so the mean of each text's token states (special tokens
included, as sentence-transformers' mean pooling counts them) is the bi-encoder's embedding and the cosine head
scores the pair exactly as the bi-encoder does (tested). Training opens the gates where reading the passage with the
query helps (g = 1 is plain joint attention), so model selection starts from the bi-encoder's ranking and keeps it
unless a checkpoint beats it.

The gates live in the model as a module of their own (`TrainsWhole`: they train under every tuning method, as a
task head does, and are saved with its weights). The attention runs through transformers' attention interface
(registered as ATTENTION), which reads each pair's `segments` (1 query, 2 passage, 0 padding) from the forward
call; it is built on PyTorch's scaled_dot_product_attention. Families: those whose attention module calls the
interface and whose positions can restart per text (SUPPORTED).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from peft_ir.errors import PeftIRError
from peft_ir.tuning.modules import TrainsWhole

ATTENTION = "peft_ir_gated_cross"
GATE = "cross_gate"  # the child of each self-attention module that holds its heads' gates
SUPPORTED = ("bert", "electra", "roberta", "xlm-roberta")
AFTER_PADDING = ("roberta", "xlm-roberta")  # their positions count from the padding index + 1, not from 0


class CrossGate(TrainsWhole):
    """g, one per attention head, starting at 0 (the bi-encoder)."""

    def __init__(self, num_heads: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_heads))


def gated_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attention_mask: Any, scaling: float | None = None, dropout: float = 0.0,
                    segments: torch.Tensor | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention-interface signature ([batch, heads, length, head_dim] in, [batch, length, heads,
    head_dim] out). The model's own mask is not used: `segments` says which tokens are real and which text each
    belongs to."""
    if segments is None:
        raise PeftIRError("gated cross attention needs the pair's segments (CrossEncoder.collate builds them)")
    gate = getattr(getattr(module, GATE, None), "weight", None)  # duck-typed: peft's modules_to_save wraps it
    if not isinstance(gate, torch.Tensor) or gate.shape != (query.shape[1],):
        raise PeftIRError(f"{type(module).__name__} has no {GATE} of one gate per head: build the model with "
                          "add_gates")
    real = segments > 0
    within = ((segments[:, :, None] == segments[:, None, :]) & real[:, None, :])[:, None]
    joint = real[:, None, None, :]
    sdpa = nn.functional.scaled_dot_product_attention  # `dropout` is 0 outside training, as the module passes it
    own = sdpa(query, key, value, attn_mask=within, dropout_p=dropout, scale=scaling)
    both = sdpa(query, key, value, attn_mask=joint, dropout_p=dropout, scale=scaling)
    g = gate.to(own.dtype).view(1, -1, 1, 1)
    return (own + g * (both - own)).transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface  # noqa: PLC0415

    AttentionInterface.register(ATTENTION, gated_attention)


def check_supported(config: Any) -> None:
    """Refuse a family whose attention or positions the gated layout cannot drive, naming those it can."""
    model_type = str(getattr(config, "model_type", "") or "")
    if model_type not in SUPPORTED:
        raise PeftIRError(f"cross_attention: gated supports model types {', '.join(SUPPORTED)}; this model is "
                          f"'{model_type or '?'}'")


def load_kwargs() -> dict[str, str]:
    """`from_pretrained` keyword arguments that route a model's attention through gated_attention."""
    _register()
    return {"attn_implementation": ATTENTION}


def add_gates(model: nn.Module) -> None:
    """Give every self-attention module of `model` its CrossGate (zeros: the bi-encoder), on the weights' device."""
    from peft_ir.tuning.arch import detect  # noqa: PLC0415

    check_supported(model.config)
    arch = detect(model)
    like = next(model.parameters())
    for slot in arch.layers:
        gate = CrossGate(arch.num_heads).to(device=like.device)
        slot.self_attention.add_module(GATE, gate)


def first_position(config: Any) -> int:
    """The position id of a text's first token for this (supported) family: RoBERTa counts from its padding index +
    1."""
    return int(config.pad_token_id) + 1 if config.model_type in AFTER_PADDING else 0


def restarted_positions(segments: torch.Tensor, start: int) -> torch.Tensor:
    """Position ids that count each text (segment 1, segment 2) from `start`, as the bi-encoder reads it alone;
    padding gets `start`."""
    positions = torch.full_like(segments, start)
    for label in (1, 2):
        inside = segments == label
        positions = torch.where(inside, start + inside.long().cumsum(dim=1) - 1, positions)
    return positions
