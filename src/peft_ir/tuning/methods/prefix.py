"""Prefix tuning, P-tuning v2 style: l learned key and value vectors per head in every attention layer.

The prefixes are direct parameters (no reparameterisation MLP). The self-attention forward is replaced by a
copy of transformers 5.x's own (q/k/v projections, then the configured attention interface, eager or sdpa)
that concatenates the prefixes in front of the keys and values and extends the attention mask so every query
may attend to them; with l = 0 it equals the original (tested).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from peft_ir.errors import PeftIRError
from peft_ir.tuning.arch import BERT, DISTILBERT, Arch
from peft_ir.tuning.config import Method, Part, TuningConfig, register
from peft_ir.tuning.modules import TuningModule, place

CHILD = "tuning_prefix"
SUPPORTED_ATTENTION = ("eager", "sdpa")


def extend_mask(mask: Any, length: int) -> Any:
    """Prepend `length` always-visible key positions to a 4-D boolean (True = attend) or additive mask."""
    if mask is None or length == 0:
        return mask
    if not isinstance(mask, torch.Tensor) or mask.dim() != 4:
        raise PeftIRError(
            f"prefix tuning needs a 4-D attention mask (eager or sdpa attention); got {type(mask).__name__}"
        )
    shape = (*mask.shape[:-1], length)
    if mask.dtype == torch.bool:
        visible = torch.ones(shape, dtype=torch.bool, device=mask.device)
    else:
        visible = torch.zeros(shape, dtype=mask.dtype, device=mask.device)
    return torch.cat([visible, mask], dim=-1)


class PrefixKV(TuningModule):
    """Learned prefix keys and values of one attention layer, each (heads, l, head_dim)."""

    def __init__(self, num_heads: int, head_dim: int, length: int, std: float):
        super().__init__()
        self.key = nn.Parameter(torch.randn(num_heads, length, head_dim) * std)
        self.value = nn.Parameter(torch.randn(num_heads, length, head_dim) * std)

    @property
    def length(self) -> int:
        return self.key.shape[1]

    def extend(self, key: torch.Tensor, value: torch.Tensor, mask: Any) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Prepend the prefixes to (batch, heads, seq, head_dim) keys/values and open them in the mask."""
        batch = key.shape[0]
        pk = self.key.to(key.dtype).unsqueeze(0).expand(batch, -1, -1, -1)
        pv = self.value.to(value.dtype).unsqueeze(0).expand(batch, -1, -1, -1)
        return torch.cat([pk, key], dim=2), torch.cat([pv, value], dim=2), extend_mask(mask, self.length)


def _attention_interface(module: nn.Module) -> Callable:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    impl = module.config._attn_implementation
    if impl not in SUPPORTED_ATTENTION:
        raise PeftIRError(f"prefix tuning supports attention implementations {SUPPORTED_ATTENTION}; got '{impl}'")
    eager = sys.modules[type(module).__module__].eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS.get_interface(impl, eager)


def bert_self_attention_forward(
    self: nn.Module,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    past_key_values: Any = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """BertSelfAttention.forward (transformers 5.x) with prefix keys/values; also RoBERTa's identical copy."""
    if past_key_values is not None:
        raise PeftIRError("prefix tuning does not support a key/value cache (encoders only)")
    input_shape = hidden_states.shape[:-1]
    hidden_shape = (*input_shape, -1, self.attention_head_size)
    query = self.query(hidden_states).view(*hidden_shape).transpose(1, 2)
    key = self.key(hidden_states).view(*hidden_shape).transpose(1, 2)
    value = self.value(hidden_states).view(*hidden_shape).transpose(1, 2)
    key, value, attention_mask = self.tuning_prefix.extend(key, value, attention_mask)
    attn_output, attn_weights = _attention_interface(self)(
        self,
        query,
        key,
        value,
        attention_mask,
        dropout=0.0 if not self.training else self.dropout.p,
        scaling=self.scaling,
        **kwargs,
    )
    attn_output = attn_output.reshape(*input_shape, -1).contiguous()
    return attn_output, attn_weights


def distilbert_self_attention_forward(
    self: nn.Module,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """DistilBertSelfAttention.forward (transformers 5.x) with prefix keys/values."""
    input_shape = hidden_states.shape[:-1]
    hidden_shape = (*input_shape, -1, self.attention_head_size)
    query = self.q_lin(hidden_states).view(*hidden_shape).transpose(1, 2)
    key = self.k_lin(hidden_states).view(*hidden_shape).transpose(1, 2)
    value = self.v_lin(hidden_states).view(*hidden_shape).transpose(1, 2)
    key, value, attention_mask = self.tuning_prefix.extend(key, value, attention_mask)
    attn_output, attn_weights = _attention_interface(self)(
        self,
        query,
        key,
        value,
        attention_mask,
        dropout=0.0 if not self.training else self.dropout.p,
        scaling=self.scaling,
        **kwargs,
    )
    attn_output = attn_output.reshape(*input_shape, -1).contiguous()
    attn_output = self.out_lin(attn_output)
    return attn_output, attn_weights


FORWARDS = {BERT: bert_self_attention_forward, DISTILBERT: distilbert_self_attention_forward}


def prefix_parts(arch: Arch, length: int) -> list[Part]:
    where = f"keys/values of {arch.pattern('self_attention')} (as .{CHILD}), mask extended"
    return [Part(f"key/value prefixes, l={length}", where, 2 * length * arch.num_heads * arch.head_dim, arch.num_layers)]


def inject_prefix(arch: Arch, length: int) -> None:
    """Give every self-attention layer `length` learned key/value prefixes (length 0 is allowed for tests)."""
    impl = arch.model.config._attn_implementation
    if impl not in SUPPORTED_ATTENTION:
        raise PeftIRError(
            f"prefix tuning supports attention implementations {SUPPORTED_ATTENTION}; the model uses '{impl}' "
            "(load it with attn_implementation='sdpa' or 'eager')"
        )
    std = float(getattr(arch.model.config, "initializer_range", 0.02))
    forward = FORWARDS.get(arch.spec)
    if forward is None:
        raise PeftIRError(f"prefix tuning does not support model_type '{arch.family}' yet")
    for slots in arch.layers:
        attention = slots.self_attention
        prefix = place(PrefixKV(arch.num_heads, arch.head_dim, length, std), like=attention_weight(attention))
        attention.add_module(CHILD, prefix)
        attention.forward = types.MethodType(forward, attention)


def attention_weight(attention: nn.Module) -> torch.Tensor:
    return next(attention.parameters())


@register
class Prefix(Method):
    name = "prefix"
    order = 40
    summary = "learned key/value prefixes in every attention layer (P-tuning v2, no MLP)"
    size_fields = ("prefix_len",)
    budget_fields = ("prefix_len",)
    defaults = {"prefix_len": 32}
    merge_blocker = "prefixes are extra attention positions, not a change of any base weight"

    def parts(self, arch: Arch, config: TuningConfig) -> list[Part]:
        return prefix_parts(arch, config.prefix_len)

    def inject(self, arch: Arch, config: TuningConfig) -> None:
        inject_prefix(arch, config.prefix_len)
