"""The one config schema of every PEFT method (`TuningConfig`: `method` plus the sizes that method uses), and the
registry of the methods it names.

Sizes default to None and are filled from the method's defaults when the config is built, so a saved config is
always complete and a config never carries a size its method would silently ignore (that is an error).

Each method is a `Method` subclass in its own module of `peft_ir.tuning.methods`, decorated with `@register`; the
package imports every module there, so adding a method means adding one file. The config and the methods live in
one module because each is defined in terms of the other: a config is validated by its method, a method reads
its sizes from a config.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from peft_ir.errors import PeftIRError

if TYPE_CHECKING:
    from torch import nn

    from peft_ir.tuning.arch import Arch

ASIDE_PLACEMENTS = ("layer", "sublayer", "model")
ACTIVATIONS = ("relu", "gelu", "tanh", "silu")

# Fields every config may carry whatever the method; all others must be listed in the method's `size_fields`.
COMMON_FIELDS = ("method", "seed", "aside", "activation", "train_pooler")


@dataclass
class TuningConfig:
    """Which PEFT method to apply and its sizes.

    method: a name in `peft_ir.tuning.METHODS` (full, bitfit, adapter, parallel, prefix, lora, mam, iaa-s, iaa-l,
        iaa-m).
    r: bottleneck of the Houlsby (adapter, iaa-*) or parallel (parallel, mam) adapters.
    ar: bottleneck of the aside modules (iaa-*, or any method with `aside` set).
    prefix_len: number of learned key/value prefix vectors per attention layer (prefix, mam).
    lora_r, lora_alpha, lora_dropout, target_modules: LoRA rank, alpha (scale = alpha / r), dropout and the
        names of the linear layers inside the encoder layers to adapt (peft suffix matching; default: the family's
        entry in the architecture table, e.g. query and value for BERT, q_proj and v_proj for Llama).
    scaling: the constant s of the parallel adapter's output s * BN(x) (He et al. 2022 use 4).
    aside: attach aside modules ("layer" = IAA-L, "sublayer" = IAA-S, "model" = IAA-M) to the base method;
        fixed for the iaa-* methods.
    activation: non-linearity of the bottleneck modules.
    train_pooler: whether a cross-encoder's pooler (BERT's dense + tanh under the classifier) trains with the
        head under every method. None/False: a pretrained pooler stays frozen, so a method's share is its own and
        the head's; the re-ranker resolves None to True only for a pooler its checkpoint never trained (a
        sentence-transformers folder, or one missing from the checkpoint). Bare encoders have no pooler to train.
    seed: seeds the initialisation of the added modules so that a run is reproducible.
    """

    method: str
    r: int | None = None
    ar: int | None = None
    prefix_len: int | None = None
    lora_r: int | None = None
    lora_alpha: float | None = None
    lora_dropout: float | None = None
    target_modules: list[str] | None = None
    scaling: float | None = None
    aside: str | None = None
    activation: str | None = None
    train_pooler: bool | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        method = get_method(self.method)
        if isinstance(self.target_modules, str):
            self.target_modules = [self.target_modules]
        if self.target_modules is not None:
            self.target_modules = [str(t) for t in self.target_modules]
        if method.fixed_aside is not None:
            if self.aside not in (None, method.fixed_aside):
                raise PeftIRError(
                    f"method {self.method} always places its aside modules at '{method.fixed_aside}'; "
                    f"got aside='{self.aside}' (use method 'adapter' with aside='{self.aside}' instead)"
                )
            self.aside = method.fixed_aside
        if self.aside is not None:
            if self.aside not in ASIDE_PLACEMENTS:
                raise PeftIRError(f"aside must be one of {', '.join(ASIDE_PLACEMENTS)}; got '{self.aside}'")
            if not method.allows_aside:
                raise PeftIRError(f"method {self.method} takes no aside modules")
        allowed = set(self.used_fields())
        for f in dataclasses.fields(self):
            if f.name in COMMON_FIELDS:
                continue
            if f.name not in allowed and getattr(self, f.name) is not None:
                raise PeftIRError(
                    f"{f.name} does not apply to method {self.method}"
                    f" (its sizes: {', '.join(sorted(allowed)) or 'none'})"
                )
        defaults = dict(method.defaults)
        if self.aside is not None:
            defaults.setdefault("ar", 12)
        if self.uses_bottleneck():
            defaults.setdefault("activation", "relu")
        for name, value in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        method.finalize(self)
        if self.activation is not None and not self.uses_bottleneck():
            raise PeftIRError(f"activation does not apply to method {self.method} (it has no bottleneck module)")
        for name in ("lora_alpha", "lora_dropout", "scaling"):
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(self, name, float(value))
        self._validate()

    def used_fields(self) -> tuple[str, ...]:
        """Size fields that this config's method (and aside modules, if any) read."""
        fields = tuple(get_method(self.method).size_fields)
        if self.aside is not None and "ar" not in fields:
            fields += ("ar",)
        return fields

    def uses_bottleneck(self) -> bool:
        return "r" in self.used_fields() or "ar" in self.used_fields()

    def _validate(self) -> None:
        for name in ("r", "ar", "prefix_len", "lora_r"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise PeftIRError(f"{name} must be a positive integer; got {value!r}")
        if self.lora_dropout is not None and not 0.0 <= float(self.lora_dropout) < 1.0:
            raise PeftIRError(f"lora_dropout must be in [0, 1); got {self.lora_dropout}")
        if self.lora_alpha is not None and float(self.lora_alpha) <= 0:
            raise PeftIRError(f"lora_alpha must be positive; got {self.lora_alpha}")
        if self.activation is not None and self.activation not in ACTIVATIONS:
            raise PeftIRError(f"activation must be one of {', '.join(ACTIVATIONS)}; got '{self.activation}'")
        if self.target_modules is not None and not self.target_modules:
            raise PeftIRError("target_modules must name at least one module")
        if self.train_pooler is not None and not isinstance(self.train_pooler, bool):
            raise PeftIRError(f"train_pooler must be true or false; got {self.train_pooler!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise PeftIRError(f"seed must be an integer; got {self.seed!r}")

    def sizes(self) -> dict[str, Any]:
        """The method's sizes only (for display): used fields with their values."""
        out = {name: getattr(self, name) for name in self.used_fields() if getattr(self, name) is not None}
        if self.aside is not None:
            out["aside"] = self.aside
        if self.activation is not None:
            out["activation"] = self.activation
        return out

    def to_dict(self) -> dict[str, Any]:
        """All schema fields (JSON-serialisable)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if out["target_modules"] is not None:
            out["target_modules"] = list(out["target_modules"])
        return out

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TuningConfig:
        """Build a config from a dict; unknown keys are an error, not silently dropped."""
        if not isinstance(data, dict):
            raise PeftIRError(f"a tuning config must be a mapping; got {type(data).__name__}")
        known = cls.field_names()
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise PeftIRError(
                f"unknown tuning config key(s): {', '.join(unknown)}; known keys: {', '.join(known)}"
            )
        if "method" not in data:
            raise PeftIRError("a tuning config needs 'method'")
        return cls(**data)

    def replace(self, **changes: Any) -> TuningConfig:
        """A copy with some fields changed (validated again)."""
        data = self.to_dict()
        data.update(changes)
        return TuningConfig.from_dict(data)


# -- the method registry -----------------------------------------------------------------------------------------
METHODS: dict[str, Method] = {}


@dataclass(frozen=True)
class Part:
    """One group of trainable parameters: what it is, where it sits, its size per instance and instance count."""

    what: str
    where: str
    each: int
    count: int

    @property
    def total(self) -> int:
        return self.each * self.count


class Method:
    """A PEFT method: which config sizes it reads, how many parameters it trains, how it injects itself.

    `parts()` is the closed-form parameter count (used by `describe` and the budget helper without touching the
    model); `inject()` must create exactly those parameters (the tests compare both).
    """

    name: ClassVar[str] = ""
    order: ClassVar[int] = 100  # position in listings
    summary: ClassVar[str] = ""
    size_fields: ClassVar[tuple[str, ...]] = ()
    budget_fields: ClassVar[tuple[str, ...]] = ()  # integer sizes the budget helper may choose
    defaults: ClassVar[dict[str, Any]] = {}
    allows_aside: ClassVar[bool] = True
    fixed_aside: ClassVar[str | None] = None
    merge_blocker: ClassVar[str | None] = "it adds modules that are not a change of the base weights"

    def finalize(self, config: TuningConfig) -> None:
        """Fill sizes that depend on other sizes (after the plain defaults)."""

    def parts(self, arch: Arch, config: TuningConfig) -> list[Part]:
        raise NotImplementedError

    def inject(self, arch: Arch, config: TuningConfig) -> None:
        """Add this method's modules to the (frozen) model and mark exactly its parameters trainable."""
        raise NotImplementedError

    def merge_blocker_on(self, structure: Callable[[], nn.Module]) -> str | None:
        """Why this method cannot be merged into the model `structure()` builds (its modules, weights not needed:
        BitFit asks whether the config can build the biases it adds), or None. Called before any weights load."""
        return self.merge_blocker

    def merge(self, arch: Arch, config: TuningConfig) -> None:
        """Fold the trained weights into the base and remove every added module, or say why that is impossible."""
        if self.merge_blocker is not None:
            raise PeftIRError(f"method {self.name} cannot be merged into the base model: {self.merge_blocker}")


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: add a method to `METHODS` under its name."""
    if not cls.name or cls.name in METHODS:
        raise ValueError(f"method name {cls.name!r} is empty or registered twice")
    METHODS[cls.name] = cls()
    return cls


def load_methods() -> None:
    """Import every module of `peft_ir.tuning.methods` so that their `@register` decorators run."""
    import peft_ir.tuning.methods as package  # noqa: PLC0415

    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
    ordered = sorted(METHODS.items(), key=lambda item: (item[1].order, item[0]))
    METHODS.clear()
    METHODS.update(ordered)


def get_method(name: str) -> Method:
    if not METHODS:
        load_methods()
    try:
        return METHODS[name]
    except KeyError:
        raise PeftIRError(f"unknown tuning method '{name}'; known: {', '.join(METHODS)}") from None


def parse_share(share: float | str) -> float:
    """Parse a budget share: 0.005, "0.005" or "0.5%" all mean half a percent of the base parameters."""
    text = str(share).strip()
    try:
        if text.endswith("%"):
            value = float(text[:-1].strip()) / 100.0
        else:
            value = float(text)
    except ValueError:
        raise PeftIRError(f"cannot read budget '{share}': give a fraction (0.005) or a percentage (0.5%)") from None
    if not 0.0 < value <= 1.0:
        raise PeftIRError(
            f"budget {share} is outside (0, 1]: give a fraction (0.005) or a percentage with % (0.5%)"
        )
    return value
