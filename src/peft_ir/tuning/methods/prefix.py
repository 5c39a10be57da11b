"""Prefix tuning, P-tuning v2 style: l learned key and value vectors per key/value head in every attention layer.

The prefixes are direct parameters (no reparameterisation MLP), always visible to every query and without position.
They enter a model's attention in one of two ways, neither a copy of any model's forward, with the same parameters
(and checkpoint names) and the same attention:

- Through transformers' attention interface (every family whose attention module calls it): each prefixed module sees
  the model's config through a view whose `_attn_implementation` names PREFIX_ATTENTION, a function registered in
  `ALL_ATTENTION_FUNCTIONS` that prepends the prefixes to the keys and values the module computed (after any rotary
  embedding, so prefixes carry no position) and opens them in the attention mask, then calls the model's own
  implementation (eager or sdpa, read from the model's config at every call). The model's masks are built as without
  prefixes.
- Through hooks, for a module that computes attention itself (MPNet; its family's entry in ARCHITECTURES names its key
  and value projections, `Family.kv_proj`): a pre-hook prepends l zero rows to its hidden states (the module shapes
  its heads from them) and l visible positions to its additive mask and zero-pads its position bias (no position for
  prefixes); hooks on the key and value projections put the learned prefixes in those l rows; a hook on the module
  drops the l extra query rows from its output (and attention probabilities). Anything hooked inside the module sees
  the l extra rows.

With l = 0 either equals the original (tested).

Masks: a 4-D mask (boolean, True = attend, or additive) gets l always-visible key columns in front. Without a mask
(sdpa skips it when nothing is padded) a bidirectional module needs none; a causal one gets an explicit mask that
shows every query the prefixes and the keys up to its own position (bottom-right aligned, as a cache would). A
sliding window (Mistral) does not hide the prefixes: they sit in front of the window's mask, visible to all.
Grouped-query attention: the prefixes have the module's key/value heads, and the implementation repeats them for
the query heads as it does the module's own keys.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from peft_ir.errors import PeftIRError
from peft_ir.tuning.arch import Arch
from peft_ir.tuning.config import Method, Part, TuningConfig, register
from peft_ir.tuning.modules import TuningModule, place

CHILD = "tuning_prefix"
SUPPORTED_ATTENTION = ("eager", "sdpa")
PREFIX_ATTENTION = "peft_ir_prefix"


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


def causal_prefix_mask(query_len: int, key_len: int, length: int, additive_dtype: torch.dtype | None,
                       device: torch.device) -> torch.Tensor:
    """A (1, 1, q, l + k) mask: every query sees the l prefixes and the keys up to its own position (the last query
    is the last key). Boolean (True = attend), or additive in `additive_dtype` for eager attention."""
    keys = torch.arange(key_len, device=device)
    queries = torch.arange(query_len, device=device) + (key_len - query_len)
    allowed = keys[None, :] <= queries[:, None]
    allowed = torch.cat([torch.ones(query_len, length, dtype=torch.bool, device=device), allowed], dim=-1)
    if additive_dtype is not None:
        blocked = torch.finfo(additive_dtype).min
        allowed = torch.zeros(allowed.shape, dtype=additive_dtype, device=device).masked_fill(~allowed, blocked)
    return allowed[None, None]


class PrefixKV(TuningModule):
    """Learned prefix keys and values of one attention layer, each (key/value heads, l, head_dim)."""

    def __init__(self, num_heads: int, head_dim: int, length: int, std: float):
        super().__init__()
        self.key = nn.Parameter(torch.randn(num_heads, length, head_dim) * std)
        self.value = nn.Parameter(torch.randn(num_heads, length, head_dim) * std)

    @property
    def length(self) -> int:
        return self.key.shape[1]

    def extend(self, key: torch.Tensor, value: torch.Tensor, mask: Any) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Prepend the prefixes to (batch, kv heads, seq, head_dim) keys/values and open them in the mask."""
        if key.shape[1] != self.key.shape[0] or key.shape[-1] != self.key.shape[-1]:
            raise PeftIRError(f"prefix tuning: keys of shape {tuple(key.shape)} do not fit prefixes of "
                              f"{self.key.shape[0]} heads x {self.key.shape[-1]} dims")
        batch = key.shape[0]
        pk = self.key.to(key.dtype).unsqueeze(0).expand(batch, -1, -1, -1)
        pv = self.value.to(value.dtype).unsqueeze(0).expand(batch, -1, -1, -1)
        return torch.cat([pk, key], dim=2), torch.cat([pv, value], dim=2), extend_mask(mask, self.length)

    # -- the hook path (a module that computes attention itself) --------------------------------------------------
    def attach(self, attention: nn.Module, key_proj: nn.Module, value_proj: nn.Module) -> None:
        """Enter `attention` through hooks: l dummy rows in, prefixes into their keys/values, the rows out again."""
        attention.register_forward_pre_hook(self._enter, with_kwargs=True)
        key_proj.register_forward_hook(self._keys)
        value_proj.register_forward_hook(self._values)
        attention.register_forward_hook(self._leave)

    def _enter(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
        bound = _forward_signature(type(module)).bind(module, *args, **kwargs)
        given, n = bound.arguments, self.length
        hidden = given["hidden_states"]
        given["hidden_states"] = torch.cat([hidden.new_zeros(hidden.shape[0], n, hidden.shape[-1]), hidden], dim=1)
        for name in ("attention_mask", "position_bias"):  # additive: zeros = visible, no bias
            if given.get(name) is not None:
                given[name] = _prepend_queries(extend_mask(given[name], n), n)
        return bound.args[1:], bound.kwargs

    def _keys(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return self._into_rows(self.key, output)

    def _values(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return self._into_rows(self.value, output)

    def _into_rows(self, prefix: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """A projection's (batch, l + seq, heads * head_dim) output with the prefixes (heads side by side) in its first
        l rows, in place of the projected dummy rows."""
        rows = prefix.transpose(0, 1).reshape(self.length, prefix.shape[0] * prefix.shape[2]).to(output.dtype)
        if output.shape[-1] != rows.shape[-1]:
            raise PeftIRError(f"prefix tuning: a key/value projection of width {output.shape[-1]} does not fit "
                              f"prefixes of {self.key.shape[0]} heads x {self.key.shape[-1]} dims")
        return torch.cat([rows.expand(output.shape[0], -1, -1), output[:, self.length:]], dim=1)

    def _leave(self, module: nn.Module, args: tuple, output: Any) -> Any:
        n = self.length
        if isinstance(output, torch.Tensor):
            return output[:, n:]
        return (output[0][:, n:], *(t[..., n:, :] if isinstance(t, torch.Tensor) and t.dim() == 4 else t
                                    for t in output[1:]))  # attention probabilities: (batch, heads, queries, keys)


@functools.cache
def _forward_signature(cls: type) -> inspect.Signature:
    return inspect.signature(cls.forward)


def _prepend_queries(bias: torch.Tensor, length: int) -> torch.Tensor:
    """Prepend `length` query rows (all visible, no bias) to a (..., queries, keys) mask or bias that has one row per
    query; one broadcast row stays as it is."""
    if bias.shape[-2] == 1 or length == 0:
        return bias
    shape = (*bias.shape[:-2], length, bias.shape[-1])
    rows = torch.ones(shape, dtype=torch.bool, device=bias.device) if bias.dtype == torch.bool else \
        torch.zeros(shape, dtype=bias.dtype, device=bias.device)
    return torch.cat([rows, bias], dim=-2)


class PrefixConfigView:
    """The model's config as one prefixed attention module sees it: every attribute read through to the model's
    (live) config, except `_attn_implementation`, which names the prefix dispatcher."""

    _attn_implementation = PREFIX_ATTENTION

    def __init__(self, config: Any):
        object.__setattr__(self, "base_config", config)

    def __getattr__(self, name: str) -> Any:
        if name == "base_config" or name.startswith("__"):  # not set yet (copy/pickle build the object bare)
            raise AttributeError(name)
        return getattr(self.base_config, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.base_config, name, value)


def _implementation(module: nn.Module) -> tuple[str, Callable]:
    """The attention implementation the model's config names now (eager or sdpa), as a function."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    impl = module.config.base_config._attn_implementation
    if impl not in SUPPORTED_ATTENTION:
        raise PeftIRError(f"prefix tuning supports attention implementations {SUPPORTED_ATTENTION}; got '{impl}' "
                          "(load the model with attn_implementation='sdpa' or 'eager')")
    if impl == "eager":
        return impl, sys.modules[type(module).__module__].eager_attention_forward
    return impl, ALL_ATTENTION_FUNCTIONS[impl]


def prefix_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: Any, **kwargs: Any) -> tuple[torch.Tensor, Any]:
    """The attention function of a prefixed module: prefixes in front of its keys/values, then its implementation."""
    impl, attend = _implementation(module)
    prefix: PrefixKV = getattr(module, CHILD)
    query_len, key_len = query.shape[2], key.shape[2]
    key, value, attention_mask = prefix.extend(key, value, attention_mask)
    is_causal = kwargs.pop("is_causal", None)  # as sdpa reads it: the call's flag, else the module's (default causal)
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", impl == "sdpa")
    if attention_mask is None and causal and query_len > 1 and prefix.length:
        attention_mask = causal_prefix_mask(query_len, key_len, prefix.length,
                                            query.dtype if impl == "eager" else None, query.device)
    if impl == "sdpa":
        kwargs["is_causal"] = causal
    return attend(module, query, key, value, attention_mask, **kwargs)


def _register() -> None:
    from transformers.modeling_utils import AttentionInterface

    if PREFIX_ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(PREFIX_ATTENTION, prefix_attention)


def _calls_the_attention_interface(attention: nn.Module) -> bool:
    code = getattr(inspect.unwrap(type(attention).forward), "__code__", None)
    return code is not None and "ALL_ATTENTION_FUNCTIONS" in code.co_names and hasattr(attention, "config")


def check_attention(arch: Arch) -> tuple[str, str] | None:
    """How prefixes enter this family's attention: None through transformers' attention interface, else the names of
    the key and value projections the hooks act on (the family's `kv_proj`). Refuse a family with neither."""
    attention = arch.layers[0].self_attention
    if _calls_the_attention_interface(attention):
        return None
    kv_proj = arch.spec.kv_proj if arch.spec is not None else None
    if kv_proj is None:
        raise PeftIRError(
            f"prefix tuning (and mam) need an attention module that calls transformers' attention interface, or "
            f"key/value projections named in its family's entry of ARCHITECTURES (kv_proj, peft_ir/tuning/arch.py); "
            f"{type(attention).__name__} of model_type '{arch.family}' computes its attention itself and its entry "
            "names none, so prefixes cannot enter it (choose another method, e.g. lora or iaa-l)"
        )
    if "hidden_states" not in _forward_signature(type(attention)).parameters:
        raise PeftIRError(f"prefix tuning: {type(attention).__name__}.forward of model_type '{arch.family}' takes no "
                          "`hidden_states`, which the prefix hooks extend")
    return kv_proj


def _projection(attention: nn.Module, name: str, family: str) -> nn.Module:
    try:
        return attention.get_submodule(name)
    except AttributeError:
        raise PeftIRError(f"model_type '{family}': {type(attention).__name__} has no module '{name}' (kv_proj of its "
                          "entry in ARCHITECTURES, peft_ir/tuning/arch.py)") from None


def prefix_parts(arch: Arch, length: int) -> list[Part]:
    kv_proj = check_attention(arch)
    where = f"keys/values of {arch.pattern('self_attention')} (as .{CHILD}), mask extended"
    if kv_proj is not None:
        where += f", entered by hooks on its {kv_proj[0]}/{kv_proj[1]} projections"
    if arch.num_kv_heads != arch.num_heads:
        where += f" ({arch.num_kv_heads} key/value heads, shared by {arch.num_heads} query heads)"
    each = 2 * length * arch.num_kv_heads * arch.head_dim
    return [Part(f"key/value prefixes, l={length}", where, each, arch.num_layers)]


def inject_prefix(arch: Arch, length: int) -> None:
    """Give every self-attention layer `length` learned key/value prefixes (length 0 is allowed for tests)."""
    kv_proj = check_attention(arch)
    impl = arch.model.config._attn_implementation
    if kv_proj is None and impl not in SUPPORTED_ATTENTION:
        raise PeftIRError(
            f"prefix tuning supports attention implementations {SUPPORTED_ATTENTION}; the model uses '{impl}' "
            "(load it with attn_implementation='sdpa' or 'eager')"
        )
    if kv_proj is None:
        _register()
    std = float(getattr(arch.model.config, "initializer_range", 0.02))
    for slots in arch.layers:
        attention = slots.self_attention
        prefix = place(PrefixKV(arch.num_kv_heads, arch.head_dim, length, std), like=attention_weight(attention))
        attention.add_module(CHILD, prefix)
        if kv_proj is None:
            attention.config = PrefixConfigView(attention.config)
        else:
            prefix.attach(attention, *(_projection(attention, name, arch.family) for name in kv_proj))


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
