"""BitFit (Ben Zaken et al. 2021): only the bias terms of the encoder train.

On a backbone whose projections have no bias (Llama, Mistral, Qwen3, ModernBERT by default; Qwen2's o_proj and FFN),
BitFit adds a zero bias to every Linear inside the Transformer layers that lacks one (attention and FFN projections;
not the embeddings, not a task head; RMSNorm has no bias and stays as it is) and trains those together with every
bias the encoder already has. A zero bias changes nothing, so the model starts as the frozen one exactly; the
trainable count stays closed-form (out_features of each bias-less Linear plus the existing biases). The biases are
added in the same way on every application, so a checkpoint loads onto a fresh base by applying BitFit again.

An added bias is a parameter that the base checkpoint lacks: a plain `from_pretrained` of a merged export keeps it
only where the family's config has switches that build those very biases (`attention_bias` and `mlp_bias` of Llama
and ModernBERT, which the merge then turns on). Where none does (Qwen2, Qwen3, Mistral), merging is refused and the
model exports as base + peft-ir module.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable

import torch
from torch import nn

from peft_ir.errors import PeftIRError
from peft_ir.tuning.arch import Arch, detect
from peft_ir.tuning.config import Method, Part, TuningConfig, register
from peft_ir.tuning.modules import TuningModule

# Config switches with which transformers builds a family's projections with biases (Llama, ModernBERT).
BIAS_SWITCHES = ("attention_bias", "mlp_bias")


def biasless_linears(arch: Arch) -> list[tuple[str, nn.Linear]]:
    """The Linear layers inside the Transformer layers that BitFit gives a zero bias: those without one (and, on a
    tuned model, those whose bias tuning added), under their names in the model. Added modules are not looked at."""
    from peft_ir.tuning.apply import added_names  # noqa: PLC0415  (a late import: apply loads the methods)

    added = added_names(arch.model)
    inside_added = {id(m) for layer in arch.layers for t in layer.layer.modules() if isinstance(t, TuningModule)
                    for m in t.modules()}
    found = []
    for slots in arch.layers:
        for module in slots.layer.modules():
            if isinstance(module, nn.Linear) and id(module) not in inside_added:
                name = arch.name_of(module)
                if module.bias is None or f"{name}.bias" in added:
                    found.append((name, module))
    return found


def bias_parameters(arch: Arch) -> list[tuple[str, nn.Parameter]]:
    """Every bias the encoder has of its own: q/k/v/output projections, FFN, LayerNorms, embeddings' LayerNorm (the
    pooler's belongs to a cross-encoder's head, which trains whole); not those BitFit added."""
    added = {id(linear.bias) for _, linear in biasless_linears(arch) if linear.bias is not None}
    return [(n, p) for n, p in arch.encoder_parameters()
            if (n == "bias" or n.endswith(".bias")) and id(p) not in added]


def _targets(arch: Arch) -> tuple[list[tuple[str, nn.Parameter]], list[tuple[str, nn.Linear]]]:
    """(the encoder's own biases, the Linears that get a zero bias); PeftIRError when both are empty."""
    biases, linears = bias_parameters(arch), biasless_linears(arch)
    if not biases and not linears:
        raise PeftIRError(f"bitfit: this {arch.family} model has neither bias terms nor Linear layers in its "
                          "Transformer layers, so BitFit would train nothing; choose another method")
    return biases, linears


def _names(linears: list[tuple[str, nn.Linear]]) -> str:
    """The Linears' names inside a layer (layers.0.self_attn.q_proj -> self_attn.q_proj), each once."""
    return ", ".join(dict.fromkeys(re.sub(r"^(.*?\.)?\d+\.", "", name) for name, _ in linears))


def bias_switches(model: nn.Module) -> dict[str, bool]:
    """The config switches (of BIAS_SWITCHES) under which transformers builds `model` with exactly the biases BitFit
    adds to it besides its own, so that a plain `from_pretrained` of it merged keeps them; {} when it adds none.
    PeftIRError when no switch builds that set. Reads the structure only (a meta-device model will do)."""
    arch = detect(model)
    linears = biasless_linears(arch)
    if not linears:
        return {}
    config = model.config
    switches = {name: True for name in BIAS_SWITCHES if getattr(config, name, None) is False}
    if switches:
        changed = copy.deepcopy(config)
        for name, value in switches.items():
            setattr(changed, name, value)
        with torch.device("meta"):
            rebuilt = type(model)(changed)
        expected = {n for n, _ in model.named_parameters()} | {f"{name}.bias" for name, _ in linears}
        if {n for n, _ in rebuilt.named_parameters()} == expected:
            return switches
    have = [name for name in BIAS_SWITCHES if hasattr(config, name)]
    raise PeftIRError(
        f"BitFit adds zero biases to the {arch.family} model's {_names(linears)} projections, and its config has "
        + (f"no switch that builds exactly those ({', '.join(have)} cover{'s' if len(have) == 1 else ''} only part)"
           if have else "no switch that builds them")
        + ", so a plain transformers folder would silently drop them"
    )


@register
class BitFit(Method):
    name = "bitfit"
    order = 10
    summary = "only the encoder's bias terms train (zero biases added where projections have none)"
    merge_blocker = None  # the trained biases are base parameters; added ones need the config's bias switches

    def parts(self, arch: Arch, config: TuningConfig) -> list[Part]:
        biases, linears = _targets(arch)
        parts = []
        if biases:
            total = sum(p.numel() for _, p in biases)
            parts.append(Part(f"bias terms ({len(biases)} tensors)", "every *.bias of the encoder (in place)", total, 1))
        if linears:
            parts.append(Part(f"added zero biases ({len(linears)} Linears)",
                              f"{arch.pattern('layer')}: {_names(linears)} (new, zero at start)",
                              sum(linear.out_features for _, linear in linears), 1))
        return parts

    def inject(self, arch: Arch, config: TuningConfig) -> None:
        biases, linears = _targets(arch)
        for _, p in biases:
            p.requires_grad_(True)
        for _, linear in linears:
            if linear.bias is None:
                w = linear.weight
                linear.bias = nn.Parameter(torch.zeros(linear.out_features, dtype=w.dtype, device=w.device))

    def merge_blocker_on(self, structure: Callable[[], nn.Module]) -> str | None:
        try:
            bias_switches(structure())
        except PeftIRError as exc:
            return str(exc)
        return None

    def merge(self, arch: Arch, config: TuningConfig) -> None:
        """Turn on the config switches that build the added biases, so that the merged model saves and reloads as a
        plain transformers model; PeftIRError where the config has none."""
        for name, value in bias_switches(arch.model).items():
            setattr(arch.model.config, name, value)
