"""LoRA through the `peft` library, injected in place (peft.inject_adapter_in_model).

In place means the model object stays the same, so a sentence-transformers wrapper holding it keeps working and
the forward signature and outputs are the base's. Targets are resolved to the full names of linear layers
inside the encoder layers (never the task head), which keeps the saved adapter_config.json loadable by plain
`peft.PeftModel.from_pretrained` on the same base class.
"""

from __future__ import annotations

from torch import nn

from peft_ir.errors import PeftIRError
from peft_ir.tuning.arch import Arch
from peft_ir.tuning.config import Method, Part, TuningConfig, register

PEFT_ADAPTER = "default"  # the name of the injected adapter (peft's default), left out of the saved keys


def _layer_linears(arch: Arch) -> list[tuple[str, str, nn.Linear]]:
    """(name inside its layer, full name, module) of every base linear layer of the encoder layers."""
    out = []
    for slots in arch.layers:
        prefix = arch.name_of(slots.layer)
        for name, module in slots.layer.named_modules():
            parts = name.split(".")
            if not name or any(p == "base_layer" or p.startswith(("lora_", "tuning_")) for p in parts):
                continue
            base = getattr(module, "base_layer", module)  # a peft LoRA layer wraps the base linear
            if isinstance(base, nn.Linear):
                out.append((name, f"{prefix}.{name}", base))
    return out


def _resolve(arch: Arch, config: TuningConfig) -> list[tuple[str, str, nn.Linear]]:
    targets = list(config.target_modules or arch.default_lora_targets)
    linears = _layer_linears(arch)
    chosen: list[tuple[str, str, nn.Linear]] = []
    for target in targets:
        hits = [item for item in linears if item[0] == target or item[0].endswith("." + target)]
        if not hits:
            local = sorted({name for name, _, _ in linears})
            raise PeftIRError(
                f"LoRA target '{target}' matches no linear layer inside the encoder layers; "
                f"they are: {', '.join(local)}"
            )
        chosen.extend(h for h in hits if h not in chosen)
    return chosen


def target_names(arch: Arch, config: TuningConfig) -> list[str]:
    """Full names of the linear layers LoRA adapts: inside encoder layers, name equal to or ending in a target."""
    return [full for _, full, _ in _resolve(arch, config)]


def peft_lora_config(arch: Arch, config: TuningConfig, for_saving: bool = False, base: str | None = None) -> object:
    """The peft LoraConfig of a tuning config. For saving it also lists the task head as modules_to_save (peft's
    way to carry fully trained modules) and names the base model, as PeftModel.save_pretrained would."""
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=target_names(arch, config),
        bias="none",
        modules_to_save=([name for name, _ in arch.head] or None) if for_saving else None,
        base_model_name_or_path=base if for_saving else None,
    )


@register
class Lora(Method):
    name = "lora"
    order = 50
    summary = "low-rank updates W + (alpha/r)·B·A on the target projections, via peft"
    size_fields = ("lora_r", "lora_alpha", "lora_dropout", "target_modules")
    budget_fields = ("lora_r",)
    defaults = {"lora_r": 16, "lora_dropout": 0.1}
    merge_blocker = None

    def finalize(self, config: TuningConfig) -> None:
        if config.lora_alpha is None:
            config.lora_alpha = float(2 * config.lora_r)

    def parts(self, arch: Arch, config: TuningConfig) -> list[Part]:
        groups: dict[str, list[int]] = {}
        for name, _, linear in _resolve(arch, config):
            groups.setdefault(name, []).append(config.lora_r * (linear.in_features + linear.out_features))
        parts = []
        for name, sizes in groups.items():
            what = f"LoRA A, B on {name}, r={config.lora_r}"
            where = f"{arch.pattern('layer')}.{name} (in place, via peft)"
            if len(set(sizes)) == 1:
                parts.append(Part(what, where, sizes[0], len(sizes)))
            else:
                parts.append(Part(what, where, sum(sizes), 1))
        return parts

    def inject(self, arch: Arch, config: TuningConfig) -> None:
        from peft import inject_adapter_in_model
        from peft.tuners.tuners_utils import cast_adapter_dtype

        inject_adapter_in_model(peft_lora_config(arch, config), arch.model, adapter_name=PEFT_ADAPTER)
        # inject_adapter_in_model gives the adapter the base layer's dtype; get_peft_model's default
        # autocast_adapter_dtype=True upcasts bfloat16/float16 adapters to float32, and so do we (tuning/precision.py)
        cast_adapter_dtype(arch.model, adapter_name=PEFT_ADAPTER)

    def merge(self, arch: Arch, config: TuningConfig) -> None:
        from peft.tuners.tuners_utils import BaseTunerLayer

        super().merge(arch, config)
        for name, module in list(arch.model.named_modules()):
            if isinstance(module, BaseTunerLayer):
                module.merge()
                parent_name, _, child = name.rpartition(".")
                parent = arch.model.get_submodule(parent_name) if parent_name else arch.model
                setattr(parent, child, module.get_base_layer())
        if hasattr(arch.model, "peft_config"):
            del arch.model.peft_config
