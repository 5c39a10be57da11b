"""Read a config YAML: follow `extends` (relative to the file, recursively), deep-merge, apply `--set` overrides.

Each dotted key remembers the file and line (or '--set') that set it last, so an error names the place to fix.
Mappings merge key by key; lists and scalars replace; `null` replaces too (e.g. `reranker: null` drops a base's
reranker, `expect: null` its expected results).

A config's `expect:` block holds what the config computes as written: a `--set` that changes anything but where the
run goes or what it is called (a seed, a step count) drops the block, with a warning, instead of failing the run
after its compute on numbers it was never meant to reproduce; so does a file that extends the config and changes it
(it is not inherited).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from peft_ir.errors import InputError
from peft_ir.experiment.config import ExperimentConfig
from peft_ir.experiment.schema import ConfigError, Origins, build, to_plain
from peft_ir.experiment.validate import (
    check_inputs,
    resolve_paths,
    resolve_precision,
    validate,
    warn_emulated_precision,
)

SET = "--set"
# overrides that leave what a config computes as it was: its `expect:` block still applies
KEEPS_RESULTS = ("name", "output", "description", "expect", "expect_tolerance")

log = logging.getLogger(__name__)


def read_layers(path: str | Path, _seen: tuple[Path, ...] = ()) -> tuple[dict[str, Any], dict[str, str]]:
    """The merged mapping of `path` and everything it extends, and the origin of every dotted key."""
    path = Path(path).resolve()
    if path in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path))
        raise ConfigError(f"{path}: 'extends' forms a cycle: {chain}")
    data, lines = _read_yaml(path)
    base_ref = data.pop("extends", None)
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if base_ref is not None:
        where = _at(str(path), lines, "extends")
        if not isinstance(base_ref, str) or not base_ref:
            raise ConfigError(f"{where}: 'extends': expected a relative path to another YAML file, got {base_ref!r}")
        base = (path.parent / base_ref).resolve()
        if not base.is_file():
            raise ConfigError(f"{where}: 'extends': {base} not found (paths are relative to the extending file)")
        merged, origins = read_layers(base, (*_seen, path))
        _drop_inherited_expect(merged, data, path, base)
    deep_merge(merged, data, "", origins, str(path), lines)
    return merged, origins


def _drop_inherited_expect(merged: dict[str, Any], data: dict[str, Any], path: Path, base: Path) -> None:
    """A base's `expect:` block holds the base's numbers: a file that extends it and changes what it computes (as a
    `--set` would) does not inherit them, else its run would fail on numbers it was never meant to reproduce."""
    changed = _changing_results(data)
    if "expect" in data or not merged.get("expect") or not changed:
        return
    merged["expect"] = {}
    log.warning("%s changes what %s computes (%s): its expect: block is not inherited; give the file its own",
                path.name, base.name, ", ".join(changed))


def deep_merge(base: dict[str, Any], over: dict[str, Any], prefix: str, origins: dict[str, str], source: str,
               lines: Mapping[str, int] | None = None) -> None:
    """Merge `over` into `base` in place, recording `source` (and the key's line) as the origin of every key it sets."""
    for key, value in over.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            origins.setdefault(dotted, _at(source, lines, dotted))
            deep_merge(base[key], value, dotted, origins, source, lines)
        else:
            base[key] = value
            _mark(dotted, value, origins, source, lines)


def apply_override(data: dict[str, Any], item: str, origins: dict[str, str]) -> None:
    """Apply one `key.sub=value` override; the value is read as a YAML scalar (40, 1e-3, true, null, [a, b])."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"{SET} {item!r}: expected KEY=VALUE with a dotted key, e.g. retriever.max_steps=40")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"{SET} {item!r}: the value is not valid YAML ({exc.problem})") from None
    *parents, leaf = key.split(".")
    node = data
    for i, part in enumerate(parents):
        if not isinstance(node.get(part), dict):
            if node.get(part) is not None:
                raise ConfigError(f"{SET} {item!r}: '{'.'.join(parents[:i + 1])}' is {node[part]!r}, not a section")
            node[part] = {}
        node = node[part]
    node[leaf] = value
    _mark(key, value, origins, SET)


def _mark(dotted: str, value: Any, origins: dict[str, str], source: str,
          lines: Mapping[str, int] | None = None) -> None:
    origins[dotted] = _at(source, lines, dotted)
    if isinstance(value, dict):
        for key, inner in value.items():
            _mark(f"{dotted}.{key}", inner, origins, source, lines)
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            _mark(f"{dotted}[{i}]", inner, origins, source, lines)


def _at(source: str, lines: Mapping[str, int] | None, dotted: str) -> str:
    """`file:line` where the file's YAML gave `dotted` a line, else the source alone."""
    line = (lines or {}).get(dotted)
    return f"{source}:{line}" if line else source


def key_lines(root: yaml.Node | None) -> dict[str, int]:
    """The 1-based line of every dotted key (`a.b`, list items `a[0]`) under a composed YAML node."""
    lines: dict[str, int] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                dotted = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
                lines[dotted] = key_node.start_mark.line + 1
                walk(value_node, dotted)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[f"{prefix}[{i}]"] = item.start_mark.line + 1
                walk(item, f"{prefix}[{i}]")

    if root is not None:
        walk(root, "")
    return lines


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The file's mapping and the line of each of its dotted keys (one parse: composed, then built safely)."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        loader = yaml.SafeLoader(path.read_text(encoding="utf-8"))
        try:
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except UnicodeDecodeError:
        raise InputError(path, None, None, "not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise InputError(path, line, None, f"invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections, got {type(data).__name__}")
    return data, key_lines(root)


def load_config(path: str | Path, overrides: Sequence[str] = (), *, check_files: bool = True,
                cwd: str | Path | None = None, notes: list[str] | None = None) -> ExperimentConfig:
    """Read, merge, override, type-check and validate a config; with `check_files` also every input on disk.

    `name` defaults to the file's stem. Relative paths are resolved against `cwd` (default: the working directory).
    With `notes` (`peft-ir run --check`), inputs fetched at run time that this machine cannot read now (Hub models
    and datasets not cached, ir_datasets ids) are listed there instead of refused.
    """
    path = Path(path)
    data, table = read_layers(path)
    for item in overrides:
        apply_override(data, item, table)
    _drop_foreign_expect(data, overrides)
    origins = Origins(str(path.resolve()), table)
    if data.get("name") is None:
        data["name"] = path.stem
    cfg = build(ExperimentConfig, data, "", origins)
    cfg = resolve_precision(resolve_paths(cfg, Path(cwd) if cwd is not None else Path.cwd()), origins)
    validate(cfg, origins)
    if check_files:  # a run (or --check) about to compute, not a finished run's record
        check_inputs(cfg, origins, notes)
        warn_emulated_precision(cfg)
    return cfg


def _drop_foreign_expect(data: dict[str, Any], overrides: Sequence[str]) -> None:
    """Drop the file's `expect:` block when `--set` changed what the config computes (and set no `expect` itself)."""
    keys = [item.partition("=")[0].strip() for item in overrides]
    changed = _changing_results(keys)
    if not data.get("expect") or not changed or any(k.split(".")[0] == "expect" for k in keys):
        return
    data["expect"] = {}
    log.warning("%s %s changes what the config computes: its expect: block (the numbers of the config as written) "
                "is not checked; --set expect.TEST_SET.RUN_KIND.MEASURE=VALUE checks numbers of your own",
                SET, ", ".join(changed))


def _changing_results(keys: Iterable[str]) -> list[str]:
    """The (dotted) keys that change what a config computes: all but where the run goes and what it is called."""
    return [k for k in keys if k.split(".")[0] not in KEEPS_RESULTS]


def to_yaml(cfg: ExperimentConfig, comments: bool = False) -> str:
    """The resolved config as YAML, keys in schema order; with `comments`, each key followed by its help text (the
    same text as the matching `peft-ir train` flag's), as `peft-ir run --check` shows it."""
    if not comments:
        return yaml.safe_dump(to_plain(cfg), sort_keys=False, allow_unicode=True)
    return "\n".join(_commented(cfg, "")) + "\n"


def _commented(obj: Any, pad: str) -> list[str]:
    lines = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        comment = f"  # {f.metadata['help']}" if f.metadata.get("help") else ""
        if dataclasses.is_dataclass(value):
            lines.append(f"{pad}{f.name}:{comment}")
            lines.extend(_commented(value, pad + "  "))
        elif isinstance(value, list) and value and all(dataclasses.is_dataclass(v) for v in value):
            lines.append(f"{pad}{f.name}:{comment}")
            for item in value:
                inner = _commented(item, pad + "    ")
                inner[0] = f"{pad}  - {inner[0].lstrip()}"
                lines.extend(inner)
        else:
            lines.append(f"{pad}{f.name}: {_flow(value)}{comment}")
    return lines


def _flow(value: Any) -> str:
    """One value as inline YAML (a scalar's document-end marker dropped)."""
    text = yaml.safe_dump(to_plain(value), default_flow_style=True, width=1 << 30, allow_unicode=True).strip()
    return text.removesuffix("...").strip()
