"""Line-oriented reading with exact error locations: BOM, CRLF and gzip tolerated, bad UTF-8 named by line."""

from __future__ import annotations

import dataclasses
import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

from peft_ir.errors import InputError

T = TypeVar("T")


GZIP_MAGIC = b"\x1f\x8b"


def _open_binary(path: Path) -> IO[bytes]:
    """The file's bytes, gunzipped when it is gzip (told by its first bytes, not its name: runs and qrels are
    passed around as .gz, as Anserini's and our committed results are)."""
    with open(path, "rb") as fh:
        gzipped = fh.read(2) == GZIP_MAGIC
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without its end) for every non-blank line of a UTF-8 text file, plain or
    gzipped."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, None, None, "file not found")
    with _open_binary(path) as fh:
        lineno = 0
        try:
            for lineno, raw in enumerate(fh, start=1):
                if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InputError(path, lineno, None, f"not valid UTF-8 (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})") from None
                line = line.rstrip("\r\n")
                if line.strip():
                    yield lineno, line
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:  # a truncated or corrupt .gz
            raise InputError(path, lineno + 1, None, f"unreadable gzip data ({exc})") from None


def read_json_object(path: str | Path) -> dict[str, Any]:
    """A whole JSON file that must hold one object (a spec, a summary, a config); errors name the file and line."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(path, exc.lineno, None, f"invalid JSON: {exc.msg}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, None, None, f"unreadable ({exc})") from None
    if not isinstance(obj, dict):
        raise InputError(path, None, None, f"expected a JSON object, got {type(obj).__name__}")
    return obj


def read_dataclass(path: str | Path, cls: type[T], ignore: tuple[str, ...] = ()) -> T:
    """A dataclass written as one JSON object (a training's spec file): an unknown key is refused naming file and
    field; keys in `ignore` are dropped, fields or not (a spec's recorded adapter path: the folder beside it is
    what counts)."""
    data = read_json_object(path)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - fields - set(ignore))
    if unknown:
        raise InputError(path, None, unknown[0], f"not a {cls.__name__} field (known: {', '.join(sorted(fields))})")
    try:
        return cls(**{k: v for k, v in data.items() if k in fields and k not in ignore})
    except (TypeError, ValueError) as exc:
        raise InputError(path, None, None, str(exc)) from None


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each line of a JSON-lines file; each line must be a JSON object."""
    for lineno, line in iter_lines(path):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(path, lineno, None, f"malformed JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise InputError(path, lineno, None, f"expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def iter_tsv(path: str | Path, columns: tuple[str, ...], *, min_columns: int | None = None,
             sep: str | None = "\t") -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, fields) of a separated file; a line with too few fields names the first missing one."""
    need = len(columns) if min_columns is None else min_columns
    for lineno, line in iter_lines(path):
        fields = line.split(sep) if sep else line.split()
        if len(fields) < need:
            raise InputError(path, lineno, columns[len(fields)],
                             f"missing (expected {len(columns)} {'tab-' if sep == chr(9) else 'whitespace-'}separated fields: "
                             f"{', '.join(columns)}; got {len(fields)})")
        yield lineno, fields


def get_field(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], path: str | Path, lineno: int,
              *, required: bool = True, default: Any = None) -> Any:
    """Fetch a typed field of a JSON object, naming file, line and field when it is missing or mistyped."""
    if key not in obj or obj[key] is None:
        if required:
            raise InputError(path, lineno, key, "missing")
        return default
    value = obj[key]
    if kind is str and key.endswith("id") and isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # numeric ids are common (BEIR, MS MARCO) and unambiguous
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise InputError(path, lineno, key, f"expected {names}, got {type(value).__name__}")
    return value


def parse_int(value: str, path: str | Path, lineno: int, field: str) -> int:
    try:
        return int(value)
    except ValueError:
        try:
            as_float = float(value)
        except ValueError:
            raise InputError(path, lineno, field, f"expected an integer, got {value!r}") from None
        if as_float != int(as_float):
            raise InputError(path, lineno, field, f"expected an integer, got {value!r}") from None
        return int(as_float)


def parse_float(value: str, path: str | Path, lineno: int, field: str) -> float:
    try:
        out = float(value)
    except ValueError:
        raise InputError(path, lineno, field, f"expected a number, got {value!r}") from None
    if out != out:
        raise InputError(path, lineno, field, "is NaN")
    return out
