"""Flags shared by the commands, generated from the library's config dataclasses (peft_ir.settings).

A field becomes `--field-name` with its type, choices, default and help text; `config_from_args` turns the parsed
flags back into the config. So `peft-ir train retriever --help`, the YAML sections and `peft-ir run --check` show
one set of defaults: the fields'.
"""

from __future__ import annotations

import argparse
import json
import typing
from collections.abc import Iterable
from typing import Any

from peft_ir.settings import Flat, flat_fields, from_flat, optional_inner
from peft_ir.training.args import DEFAULT_METHOD

# Tuning is chosen by --method / --budget / --tuning (a budget needs the model), not by a flag per size.
TUNING_FIELD = "tuning"


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# The settings given on the command line (not left at their defaults), for commands that take defaults from a file.
GIVEN = "peft_ir_given"


def _note_given(namespace: argparse.Namespace, dest: str) -> None:
    setattr(namespace, GIVEN, getattr(namespace, GIVEN, frozenset()) | {dest})


class _Store(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        _note_given(namespace, self.dest)


class _Switch(argparse.BooleanOptionalAction):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        super().__call__(parser, namespace, values, option_string)
        _note_given(namespace, self.dest)


def given_settings(args: argparse.Namespace) -> frozenset[str]:
    """The settings (flat names) whose flags add_flags made and the command line gave."""
    return getattr(args, GIVEN, frozenset())


def add_flags(parser: argparse.ArgumentParser, cls: type, skip: Iterable[str] = ()) -> None:
    """One flag per setting of `cls` (nested configs flattened), in field order; given_settings tells which the
    command line gave."""
    for f in flat_fields(cls, skip=(*skip, TUNING_FIELD)):
        parser.add_argument(flag(f.name), dest=f.name, **_argument(f))


def _argument(f: Flat) -> dict[str, Any]:
    tp = optional_inner(f.type)
    origin = typing.get_origin(tp)
    kw: dict[str, Any] = {"help": _help(f), "action": _Store}
    if f.required:
        kw["required"] = True
    else:
        kw["default"] = f.default()
    if f.field.metadata.get("metavar"):
        kw["metavar"] = f.field.metadata["metavar"]
    choices = f.choices()
    if tp is bool:
        kw["action"] = _Switch
    elif choices is not None:
        kw["choices"] = choices
    elif origin is tuple:
        items = typing.get_args(tp)
        kw.update(nargs=len(items), type=items[0])
    elif origin is list:
        (item,) = typing.get_args(tp)
        if typing.get_origin(item) is typing.Literal:  # several of fixed values, e.g. --report-to
            kw.update(nargs="*", choices=typing.get_args(item))
        else:
            kw.update(nargs="*", type=item)
    elif tp in (int, float, str):
        kw["type"] = tp
    else:
        raise TypeError(f"setting {f.name}: no flag for type {f.type!r}")
    return kw


def _help(f: Flat) -> str:
    """The field's help, with its default unless the help already says what the default is."""
    text = f.help.replace("%", "%%")
    default = None if f.required else f.default()
    if default in (None, "", {}, []) or isinstance(default, bool) or "default" in text:
        return text
    shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
    return f"{text} (default: {shown})"


def parse_value(value: str) -> Any:
    """A flag value as JSON where it is JSON (12, 0.5, true, [..]), else the text."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def config_from_args(cls: type, args: argparse.Namespace, **given: Any) -> Any:
    """The config `cls` from parsed flags, `given` values (by flat name) taking precedence."""
    values = {}
    for f in flat_fields(cls, skip=(TUNING_FIELD,)):  # args.tuning holds the --tuning KEY=VALUE items
        if hasattr(args, f.name):
            value = getattr(args, f.name)
            if isinstance(value, list) and typing.get_origin(optional_inner(f.type)) is tuple:
                value = tuple(value)
            values[f.name] = value
    return from_flat(cls, {**values, **given})


def add_tuning_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default=DEFAULT_METHOD,
                   help="full, bitfit, adapter, parallel, prefix, lora, mam, iaa-s, iaa-l, iaa-m "
                        f"(default: {DEFAULT_METHOD})")
    p.add_argument("--budget", default=None, help="target share of trainable parameters, e.g. 0.5%% (sets the sizes)")
    p.add_argument("--tuning", nargs="*", default=[], metavar="KEY=VALUE",
                   help="explicit method sizes, e.g. r=12 ar=12 lora_r=16 prefix_len=32")


def tuning_from_args(args: argparse.Namespace, model: Any) -> Any:
    """The TuningConfig the flags ask for (sizes chosen by --budget on `model`'s structure when given)."""
    from peft_ir.errors import PeftIRError  # noqa: PLC0415
    from peft_ir.tuning import TuningConfig, budget_config  # noqa: PLC0415

    fixed = {}
    for item in args.tuning:
        if "=" not in item:
            raise PeftIRError(f"--tuning expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        fixed[key] = parse_value(value)
    if args.budget:
        return budget_config(model, args.method, args.budget, **fixed)
    return TuningConfig.from_dict({"method": args.method, **fixed})


def selection_note(summary: dict[str, Any]) -> str:
    """How a training run chose its weights, for the closing line: which model was kept, both dev means, the p-value."""
    from peft_ir.training.selection import describe  # noqa: PLC0415

    return describe(summary)
