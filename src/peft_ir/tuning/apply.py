"""Apply a tuning config to a model, count its trainable share, merge it back.

Counting definition (reproduces the paper's budgets): share = trainable / total, where `total` is the number of
parameters of the *base* model (before any module was added; for a cross-encoder it includes the task head) and
`trainable` counts every parameter that trains: the method's added parameters (or unfrozen base ones for
full/bitfit) plus, for a cross-encoder, its task head, which always trains. On BERT-base (d = 768, L = 12,
total = 109,482,240), with a bottleneck of size r costing 2·d·r + r + d parameters:
    adapter r      : 2·L·(2dr + r + d)            r=16  -> 608,640   = 0.56 %
    LoRA r on q,v  : 2·L·r·(d + d)                r=16  -> 589,824   = 0.54 %
    prefix l       : L·2·l·d                      l=32  -> 589,824   = 0.54 %
    IAA-L r, ar    : L·(2·(2dr + r + d) + 2d·ar + ar + d)
                                                  12/12 -> 691,632   = 0.63 %;  50/300 -> 7,405,248 = 6.76 %
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from peft_ir.errors import PeftIRError
from peft_ir.fingerprint import base_fingerprint
from peft_ir.tuning.arch import Arch, detect
from peft_ir.tuning.aside import aside_parts, inject_aside
from peft_ir.tuning.config import Part, TuningConfig, get_method
from peft_ir.tuning.modules import TrainsWhole, TuningModule
from peft_ir.tuning.precision import keep_float32_masters, release_masters

STATE_ATTR = "peft_ir_tuning"
HEAD_PART = "task head (always trains)"
POOLER_PART = "pooler (trains with the head)"
GATES_PART = "cross-attention gates (always train)"
HEAD_PARTS = (HEAD_PART, POOLER_PART, GATES_PART)


@dataclass
class TuningState:
    """What apply_tuning recorded on the model: the config and the identity of the untouched base."""

    config: TuningConfig
    base_total: int
    base_hash: str | None
    base_class: str
    added: tuple[str, ...] = ()  # parameters tuning set on base modules (BitFit's zero biases): not base weights


def tuning_state(model: nn.Module) -> TuningState | None:
    return getattr(model, STATE_ATTR, None)


def added_names(model: nn.Module) -> set[str]:
    """Names of the parameters tuning set on base modules (BitFit's zero biases): not base weights; empty for an
    untuned model."""
    state = tuning_state(model)
    return set(state.added) if state is not None else set()


def config_parts(arch: Arch, config: TuningConfig) -> list[Part]:
    """Closed-form trainable parameter groups of `config` on `arch`: method, aside modules, task head."""
    if arch.pooler is not None and (arch.pooler in arch.head) != bool(config.train_pooler):
        arch = detect_tuned(arch.model, config)  # detected for the other pooler setting
    parts = list(get_method(config.method).parts(arch, config))
    if config.aside is not None:
        parts += aside_parts(arch, config.aside, config.ar)
    pooler = arch.pooler if arch.pooler in arch.head else None
    if pooler is not None:
        parts.append(Part(POOLER_PART, pooler[0], sum(p.numel() for p in pooler[1].parameters()), 1))
    gates = [(name, m) for name, m in arch.head if isinstance(m, TrainsWhole)]
    if gates:
        each = sum(p.numel() for p in gates[0][1].parameters())
        where = gates[0][0] if len(gates) == 1 else f"{arch.pattern('self_attention')}.{gates[0][0].rpartition('.')[2]}"
        parts.append(Part(GATES_PART, where, each, len(gates)))
    head = [(name, m) for name, m in arch.head if (name, m) != pooler and not isinstance(m, TrainsWhole)]
    if head:
        names = ", ".join(name for name, _ in head)
        total = sum(p.numel() for _, m in head for p in m.parameters())
        parts.append(Part(HEAD_PART, names, total, 1))
    return parts


def detect_tuned(model: nn.Module, config: TuningConfig) -> Arch:
    """The model's slots as `config` sees them (its pooler in the head when the config trains it)."""
    return detect(model, train_pooler=bool(config.train_pooler))


def apply_tuning(model: nn.Module, config: TuningConfig) -> nn.Module:
    """Freeze the base, inject the method's modules, and return the model to use (always the same object).

    The added modules are initialised from `config.seed` (CPU generator, then moved to the base's device and
    dtype), so two applications of one config give identical models. They follow the model's train/eval mode.
    On a bfloat16/float16 base every parameter that trains is float32, the frozen ones keep their dtype
    (tuning/precision.py).
    Gradient checkpointing works (tested with use_reentrant=False); with reentrant checkpointing the frozen
    embeddings give layer inputs without grad, so call `model.enable_input_require_grads()` as for peft.
    """
    if not isinstance(config, TuningConfig):
        raise PeftIRError(f"apply_tuning needs a TuningConfig; got {type(config).__name__}")
    if tuning_state(model) is not None:
        raise PeftIRError("this model is already tuned; apply a config to a fresh base model")
    arch = detect_tuned(model, config)
    method = get_method(config.method)
    base_total = sum(p.numel() for p in model.parameters())
    base_hash = base_fingerprint(model)
    base_ids = {id(p) for p in model.parameters()}
    model.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        method.inject(arch, config)
        if config.aside is not None:
            inject_aside(arch, config.aside, config.ar, config.activation)
    for _, head in arch.head:
        head.requires_grad_(True)
    in_modules = added_parameter_ids(model)
    keep_float32_masters(model, in_modules)  # BitFit's added biases sit on base modules: masters too
    model.train(model.training)  # new modules (e.g. peft's LoRA dropout) follow the model's train/eval mode
    added = tuple(n for n, p in model.named_parameters() if id(p) not in base_ids and id(p) not in in_modules)
    setattr(model, STATE_ATTR, TuningState(config, base_total, base_hash, type(model).__name__, added))
    return model


def added_parameter_ids(model: nn.Module) -> set[int]:
    """ids of parameters that tuning added (peft-ir modules, peft adapter weights, BitFit's zero biases while the
    model is tuned), i.e. not base weights."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    added = added_names(model)
    ids: set[int] = {id(p) for n, p in model.named_parameters() if n in added}
    for module in model.modules():
        if isinstance(module, TuningModule):
            ids.update(id(p) for p in module.parameters())
        elif isinstance(module, BaseTunerLayer):
            ids.update(id(p) for n, p in module.named_parameters() if not n.startswith("base_layer."))
    return ids


def base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict the untuned base would save: the added modules' tensors left out (peft-ir modules and peft's
    lora_* weights, BitFit's zero biases), peft's `base_layer.` folded back into the base names. Saving a tuned model
    as its base plus a tuning checkpoint needs it (peft_ir.export)."""
    added = [f"{name}." for name, m in model.named_modules() if isinstance(m, TuningModule)]
    attached = added_names(model)
    return {k.replace(".base_layer.", "."): v for k, v in model.state_dict().items()
            if ".lora_" not in k and k not in attached and not any(k.startswith(prefix) for prefix in added)}


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total): parameters that require grad, and the base model's parameter count (added modules
    excluded). share = trainable / total; see the module docstring for the closed forms."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    state = tuning_state(model)
    if state is not None:
        return trainable, state.base_total
    added = added_parameter_ids(model)
    return trainable, sum(p.numel() for p in model.parameters() if id(p) not in added)


def head_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """A tuned cross-encoder's task head: the modules that train whole under every method (the pooler when the
    config trains it, gated cross attention's gates); empty for a bare encoder without gates."""
    state = tuning_state(model)
    if state is None:
        raise PeftIRError("head_modules needs a model returned by apply_tuning or load_tuned")
    return detect_tuned(model, state.config).head


def head_parameters(model: nn.Module) -> int:
    """Parameters of a tuned cross-encoder's task head (its pooler included when it trains); 0 for an encoder."""
    return sum(p.numel() for _, m in head_modules(model) for p in m.parameters())


def pooler_parameters(model: nn.Module) -> int:
    """Parameters of a tuned cross-encoder's pooler when it trains with the head (part of head_parameters)."""
    state = tuning_state(model)
    if state is None:
        raise PeftIRError("pooler_parameters needs a model returned by apply_tuning or load_tuned")
    pooler = detect(model).pooler
    if pooler is None or not state.config.train_pooler:
        return 0
    return sum(p.numel() for p in pooler[1].parameters())


def merge_tuned(model: nn.Module) -> nn.Module:
    """Fold the trained weights into the base and drop every added module, where the maths allows.

    lora: peft's merge (W + (alpha/r)·B·A), then the LoRA layers are replaced by their base linears, so the
    merged model has the base's modules and parameter count (zero added latency). bitfit and full: the trained
    weights already are base weights (BitFit's added zero biases stay, their config switches turned on; refused where
    the config has none, see methods/bitfit.py; trained biases and a head go back to the base's dtype, and full stays
    float32 when it trained a half-precision checkpoint in float32). Every other method (and any method with aside
    modules) raises PeftIRError saying why. The returned model is untuned: all parameters are frozen.
    """
    state = tuning_state(model)
    if state is None:
        raise PeftIRError("merge_tuned needs a model returned by apply_tuning or load_tuned")
    config = state.config
    if config.aside is not None:
        raise PeftIRError(
            f"cannot merge {config.method} with aside modules: an aside module is a non-linear side path "
            "(W_up · act(W_down · z)) that has no equivalent change of the base weights"
        )
    get_method(config.method).merge(detect_tuned(model, config), config)
    release_masters(model)  # the trained biases and head back in the base's dtype
    model.requires_grad_(False)
    delattr(model, STATE_ATTR)
    return model
