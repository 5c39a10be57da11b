"""Settings defined once: a config dataclass field carries its default and its help text.

The `peft-ir` flags (cli/flags.py), the experiment YAML sections (experiment/config.py) and `peft-ir run --check`
are all generated from these fields, so a default or a help line is written in exactly one place. A field holding
another config (a retriever's EncoderSpec, say) is marked `expand=True`: its fields appear flat, beside the outer
ones, as users type them (`--query-max-length`, `retriever.query_max_length`).
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any


def setting(default: Any = dataclasses.MISSING, *, help: str, default_factory: Any = dataclasses.MISSING,
            expand: bool = False, flat_name: str | None = None, metavar: tuple[str, ...] | str | None = None,
            choices: Callable[[], Iterable[str]] | None = None) -> Any:
    """A dataclass field with its help text.

    expand: the field holds a config dataclass whose fields are shown flat beside this one's siblings.
    flat_name: the name the field goes by when flattened (when its own would clash with an outer field's).
    choices: a function returning the allowed values (read when flags are built, e.g. a registry's keys).
    """
    metadata = {"help": help, "expand": expand, "flat_name": flat_name, "metavar": metavar, "choices": choices}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


@dataclass(frozen=True)
class Flat:
    """One setting as users see it: its flat name, where it lives in the nested config, its type and field."""

    name: str
    path: tuple[str, ...]
    type: Any
    field: dataclasses.Field  # type: ignore[type-arg]

    @property
    def help(self) -> str:
        return str(self.field.metadata.get("help") or "")

    @property
    def required(self) -> bool:
        return self.field.default is dataclasses.MISSING and self.field.default_factory is dataclasses.MISSING

    def default(self) -> Any:
        """The default value (a fresh one for mutable defaults)."""
        if self.field.default_factory is not dataclasses.MISSING:
            return self.field.default_factory()
        return None if self.field.default is dataclasses.MISSING else self.field.default

    def choices(self) -> tuple[Any, ...] | None:
        """Allowed values: a Literal's arguments, or the field's `choices` function."""
        fn = self.field.metadata.get("choices")
        if fn is not None:
            return tuple(fn())
        tp = optional_inner(self.type)
        return typing.get_args(tp) if typing.get_origin(tp) is typing.Literal else None


def optional_inner(tp: Any) -> Any:
    """`X` for `X | None`, else `tp` unchanged."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def flat_fields(cls: type, skip: Iterable[str] = ()) -> list[Flat]:
    """Every setting of config class `cls`, nested configs marked `expand` flattened in place; `skip` names flat
    names to leave out. Two settings with one flat name are a bug in the classes: refused."""
    out = [f for f in _walk(cls, ()) if f.name not in set(skip)]
    seen: dict[str, Flat] = {}
    for f in out:
        if f.name in seen:
            raise TypeError(f"{cls.__name__}: settings {'.'.join(seen[f.name].path)} and {'.'.join(f.path)} "
                            f"share the flat name {f.name!r}; give one a flat_name")
        seen[f.name] = f
    return out


def field_types(cls: type) -> dict[str, Any]:
    """The resolved annotation of every field; one naming a class imported only for type checkers (to keep a
    config module free of heavy imports) resolves to Any."""
    try:
        return typing.get_type_hints(cls)
    except NameError:
        out: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            namespace = vars(sys.modules[klass.__module__])
            for name, annotation in inspect.get_annotations(klass).items():
                try:
                    out[name] = eval(annotation, namespace) if isinstance(annotation, str) else annotation  # noqa: S307
                except NameError:
                    out[name] = Any
        return out


def _walk(cls: type, prefix: tuple[str, ...]) -> list[Flat]:
    hints = field_types(cls)
    out: list[Flat] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.metadata.get("expand"):
            out.extend(_walk(optional_inner(hints[f.name]), (*prefix, f.name)))
        else:
            out.append(Flat(f.metadata.get("flat_name") or f.name, (*prefix, f.name), hints[f.name], f))
    return out


def from_flat(cls: type, values: Mapping[str, Any]) -> Any:
    """An instance of `cls` from flat values (unknown names ignored; absent settings take their defaults)."""
    return _build(cls, values)


def _build(cls: type, values: Mapping[str, Any]) -> Any:
    hints = field_types(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.metadata.get("expand"):
            kwargs[f.name] = _build(optional_inner(hints[f.name]), values)
            continue
        name = f.metadata.get("flat_name") or f.name
        if name in values:
            kwargs[f.name] = values[name]
    return cls(**kwargs)


def to_flat(obj: Any) -> dict[str, Any]:
    """The flat settings of a config instance, by flat name (the inverse of from_flat)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get("expand"):
            out.update(to_flat(value))
        else:
            out[f.metadata.get("flat_name") or f.name] = value
    return out


def default_of(cls: type, name: str) -> Any:
    """The default of setting `name` of `cls`, for a setting of another section that must start from it."""
    return next(f for f in flat_fields(cls) if f.name == name).default()


def flat_dataclass(name: str, *configs: type, base: type | None = None, skip: Iterable[str] = (),
                   module: str = __name__) -> type:
    """A frozen dataclass with `base`'s fields followed by the flat settings of `configs` (minus `skip`), same
    defaults and help: a YAML section that means exactly what the library's configs mean."""
    fields: list[tuple[str, Any, Any]] = []
    taken = {f.name for f in dataclasses.fields(base)} if base is not None else set()
    for cls in configs:
        for f in flat_fields(cls, skip=skip):
            if f.name in taken:
                continue
            taken.add(f.name)
            meta = {k: v for k, v in f.field.metadata.items() if k not in ("expand", "flat_name")}
            spec = dataclasses.field(default=f.field.default, default_factory=f.field.default_factory, metadata=meta)
            fields.append((f.name, f.type, spec))
    made = dataclasses.make_dataclass(name, fields, bases=(base,) if base is not None else (), frozen=True,
                                      kw_only=True)
    made.__module__ = module
    return made
