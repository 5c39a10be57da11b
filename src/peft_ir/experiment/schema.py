"""Build typed, frozen config dataclasses from plain YAML data, naming the dotted key and its file on any error.

Written by hand (not pydantic) because the checks are few and the messages must say where a value came from: a
config assembled from an `extends` chain and `--set` overrides has one origin per key.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

from peft_ir.errors import PeftIRError


class ConfigError(PeftIRError):
    """A config value that is unknown, mistyped or inconsistent; the message names the key and where it was set."""


class Origins:
    """Where each dotted key was set last: a file path or '--set'."""

    def __init__(self, default: str, table: Mapping[str, str] | None = None):
        self.default = default
        self.table = dict(table or {})

    def of(self, key: str) -> str:
        """The source of `key`, else of its closest enclosing section, else the top-level file."""
        while key:
            if key in self.table:
                return self.table[key]
            key = key.rpartition(".")[0]
        return self.default


def fail(key: str, origins: Origins, message: str) -> ConfigError:
    return ConfigError(f"{origins.of(key)}: '{key}': {message}")


def build(cls: type, data: Any, key: str, origins: Origins) -> Any:
    """An instance of dataclass `cls` from mapping `data`; unknown keys and wrong types raise ConfigError."""
    if not isinstance(data, Mapping):
        raise fail(key, origins, f"expected a mapping of {_type_name(cls)} settings, got {_show(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for name in data:
        if name not in fields:
            raise fail(_join(key, str(name)), origins, f"unknown key{_suggest(str(name), list(fields), key)}")
    values = {}
    for name, f in fields.items():
        if name in data:
            values[name] = convert(hints[name], data[name], _join(key, name), origins)
            if f.metadata.get("choices") is not None and values[name] is not None:  # a registry's names
                _one_of(tuple(f.metadata["choices"]()), values[name], _join(key, name), origins)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise fail(_join(key, name), origins, "required key is missing")
    return cls(**values)


def convert(tp: Any, value: Any, key: str, origins: Origins) -> Any:
    """Check `value` against the annotation `tp` and return it in its final form (tuples, floats, dataclasses)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return convert(option, value, key, origins)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        names = [_type_name(o) for o in options if o is not type(None)]
        nullable = " or null" if type(None) in options else ""
        raise fail(key, origins, f"expected {' or '.join(names)}{nullable}, got {_show(value)}")
    if origin is Literal:
        return _one_of(typing.get_args(tp), value, key, origins)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key, origins)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise fail(key, origins, f"expected a list, got {_show(value)}")
        return [convert(item, v, f"{key}[{i}]", origins) for i, v in enumerate(value)]
    if origin is tuple:
        items = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(items):
            raise fail(key, origins, f"expected a list of {len(items)} values, got {_show(value)}")
        return tuple(convert(t, v, f"{key}[{i}]", origins) for i, (t, v) in enumerate(zip(items, value)))
    if origin is dict:
        if value is None:  # `expect: null`: none (drops what an extended config had)
            return {}
        if not isinstance(value, Mapping):
            raise fail(key, origins, f"expected a mapping, got {_show(value)}")
        _, item = typing.get_args(tp)
        return {str(k): convert(item, v, _join(key, str(k)), origins) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise fail(key, origins, f"expected true or false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(key, origins, f"expected an integer, got {_show(value)}")
        return value
    if tp is float:
        # PyYAML reads 1e-3 (no dot) as a string: accept any text that is a number
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail(key, origins, f"expected a number, got {_show(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise fail(key, origins, f"expected a string, got {_show(value)}")
        return value
    raise TypeError(f"schema type {tp!r} of {key} is not supported")  # a bug in the schema, not in the config


def _one_of(choices: tuple[Any, ...], value: Any, key: str, origins: Origins) -> Any:
    if value not in choices:
        raise fail(key, origins, f"expected one of {', '.join(map(str, choices))}, got {_show(value)}"
                   f"{_suggest(str(value), [str(c) for c in choices], None)}")
    return value


def to_plain(obj: Any) -> Any:
    """Dataclasses, tuples and lists as YAML-ready dicts and lists."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj


def _suggest(name: str, known: list[str], section: str | None) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{_join(section or '', close[0])}'?"
    if section is not None:
        return f"; valid keys here: {', '.join(known)}"
    return ""


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _type_name(tp: Any) -> str:
    if dataclasses.is_dataclass(tp):
        return tp.__name__
    if typing.get_origin(tp) is Literal:
        return " or ".join(map(str, typing.get_args(tp)))
    return {"str": "a string", "float": "a number", "int": "an integer", "bool": "true or false"}.get(
        getattr(tp, "__name__", ""), getattr(tp, "__name__", str(tp)))
