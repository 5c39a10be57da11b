"""The method registry: one `Method` subclass per module in `peft_ir.tuning.methods`, registered by name.

Adding a method means adding one file to `methods/` that defines a `Method` subclass decorated with
`@register`; the package imports every module there, so no other file changes.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from peft_ir.errors import PeftIRError

if TYPE_CHECKING:
    from peft_ir.tuning.arch import Arch
    from peft_ir.tuning.config import TuningConfig

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
    import peft_ir.tuning.methods as package

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
