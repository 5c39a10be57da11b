"""`hf:` training sources read through the `datasets` library, row by row (imported lazily: only these need it).

`hf:NAME[:SPLIT]` (split default "train") names either
- a local folder (an absolute or ./ path, or any path that exists): one written by `save_to_disk` (memory-mapped,
  never read whole) or a folder of data files (jsonl, parquet, ...; splits from the file names, as `datasets`
  infers them), streamed; or
- a Hub dataset id (OWNER/NAME): read from the local Hugging Face cache when a snapshot of it is there (what
  `hf download OWNER/NAME --repo-type dataset` leaves), else streamed from the Hub (`streaming=True`).
Repositories that still carry a legacy loading script (Tevatron/msmarco-passage does; `datasets` >= 4 refuses to
run scripts) are read through their data files with the packaged builders instead.

Rows are Tevatron's schema (query_id, query, positive_passages[{docid, title, text}], negative_passages[...]),
FlagEmbedding's (query, pos, neg) or the scored one, validated as the file readers validate lines: a bad row is
an InputError naming the dataset, the row index (0-based) and the field.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peft_ir.data.training import TrainingExample, example_from_object, shape_of
from peft_ir.errors import InputError, PeftIRError

PREFIX = "hf:"
DEFAULT_SPLIT = "train"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
SCRIPT_REFUSED = "Dataset scripts are no longer supported"


def is_hf(spec: str | Path | None) -> bool:
    return spec is not None and str(spec).startswith(PREFIX)


@dataclass(frozen=True)
class HfSource:
    spec: str
    name: str            # the folder (absolute) or the Hub id
    split: str
    local: bool

    def where(self, row: int) -> str:
        return f"{self.spec} row {row}"


def _looks_local(name: str, cwd: Path) -> bool:
    return name.startswith(("/", "./", "../", "~")) or (cwd / Path(name).expanduser()).exists()


def parse_hf(spec: str, cwd: str | Path | None = None) -> HfSource:
    """Split `hf:NAME[:SPLIT]`; a NAME that is a path (absolute, ./, ../, ~, or existing) is a local folder."""
    body = str(spec)[len(PREFIX):]
    name, split = body, DEFAULT_SPLIT
    if ":" in body:
        head, tail = body.rsplit(":", 1)
        if tail and "/" not in tail:
            name, split = head, tail
    if not name or not split.strip():
        raise PeftIRError(f"{spec}: expected hf:DATASET[:SPLIT] (a Hub id such as Tevatron/msmarco-passage, or a "
                          "local folder written by datasets)")
    here = Path(cwd) if cwd is not None else Path.cwd()
    if _looks_local(name, here):
        return HfSource(str(spec), os.path.normpath(here / Path(name).expanduser()), split, True)
    if not HUB_ID.match(name):
        raise PeftIRError(f"{spec}: {name!r} is neither an existing local folder nor a Hub dataset id (OWNER/NAME)")
    return HfSource(str(spec), name, split, False)


def absolute_hf(spec: str, cwd: Path) -> str:
    """The same source with a local folder made absolute (against `cwd`) and its split spelled out; Hub ids as
    they are."""
    src = parse_hf(spec, cwd)
    return f"{PREFIX}{src.name}:{src.split}" if src.local else spec


def _offline() -> bool:
    from huggingface_hub import constants  # noqa: PLC0415

    return bool(constants.HF_HUB_OFFLINE)


def cached_snapshot(repo_id: str) -> Path | None:
    """The local Hugging Face cache's snapshot of a Hub dataset (no network), or None when there is none."""
    from huggingface_hub import snapshot_download  # noqa: PLC0415

    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", local_files_only=True))
    except Exception:  # LocalEntryNotFoundError and kin: not cached
        return None


def _is_saved(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def _todo(src: HfSource) -> str:
    return (f"download it once with a network connection (`hf download {src.name} --repo-type dataset`; it is then "
            "read from the local cache), or export it to a training file (Tevatron jsonl) or a folder "
            "(`save_to_disk`) and name that instead")


def hf_note(spec: str) -> str | None:
    """Refuse a malformed id or a missing local folder; None when the data can be read now without a network, else
    a note saying that it will be fetched from the Hub at run time. Downloads nothing."""
    src = parse_hf(spec)
    if src.local:
        if not Path(src.name).is_dir():
            raise PeftIRError(f"{spec}: {src.name} is not a folder (a folder written by datasets' save_to_disk, or "
                              "a folder of data files)")
        return None
    if cached_snapshot(src.name) is not None:
        return None
    return (f"{spec}: Hub dataset {src.name!r} is not in the local Hugging Face cache; it is streamed from the Hub "
            f"at run time (network needed{', and HF_HUB_OFFLINE is set here' if _offline() else ''})")


def require_hf(spec: str) -> None:
    """Fail now, before any model is loaded, when the data cannot be read: offline and not cached, the Hub not
    reachable, or no such dataset. One metadata request at most; downloads nothing."""
    if hf_note(spec) is None:
        return
    src = parse_hf(spec)
    if _offline():
        raise PeftIRError(f"{spec}: HF_HUB_OFFLINE is set and Hub dataset {src.name!r} is not in the local cache: "
                          + _todo(src))
    from huggingface_hub import HfApi  # noqa: PLC0415
    from huggingface_hub.errors import RepositoryNotFoundError  # noqa: PLC0415

    try:
        HfApi().dataset_info(src.name, timeout=30)
    except RepositoryNotFoundError:
        raise PeftIRError(f"{spec}: no dataset {src.name!r} on the Hugging Face Hub (or it is private: log in "
                          "with `hf auth login`)") from None
    except Exception as exc:  # no network, proxy, time-out
        raise PeftIRError(f"{spec}: cannot reach the Hugging Face Hub for dataset {src.name!r} "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                          + _todo(src)) from None


def _data_files_stream(base: str, split: str) -> Any:
    """A dataset's data files through the packaged builder their format names (json, parquet, csv, ...), for
    repositories whose legacy loading script `datasets` no longer runs; splits from the file names."""
    from datasets import load_dataset  # noqa: PLC0415
    from datasets.data_files import DataFilesDict, get_data_patterns  # noqa: PLC0415
    from datasets.load import infer_module_for_data_files  # noqa: PLC0415

    files = DataFilesDict.from_patterns(get_data_patterns(base), base_path=base)
    if split not in files:
        raise ValueError(f"Bad split: {split}. Available splits: {sorted(files)}")
    module, kwargs = infer_module_for_data_files(DataFilesDict({split: files[split]}), path=base)
    return load_dataset(module, data_files={split: list(files[split])}, split=split, streaming=True, **kwargs)


def _open(src: HfSource) -> Iterable[dict[str, Any]]:
    """The rows of the source's split, lazily (memory-mapped or streamed)."""
    from datasets import load_dataset, load_from_disk  # noqa: PLC0415

    folder = Path(src.name) if src.local else cached_snapshot(src.name)
    if folder is not None and _is_saved(folder):
        saved = load_from_disk(str(folder))
        if hasattr(saved, "keys"):  # a DatasetDict
            if src.split not in saved:
                raise ValueError(f"Bad split: {src.split}. Available splits: {sorted(saved.keys())}")
            saved = saved[src.split]
        return saved.to_iterable_dataset()
    target = str(folder) if folder is not None else src.name
    try:
        return load_dataset(target, split=src.split, streaming=True)
    except RuntimeError as exc:
        if SCRIPT_REFUSED not in str(exc):
            raise
        return _data_files_stream(target if folder is not None else f"hf://datasets/{src.name}", src.split)


def hf_examples(spec: str, limit: int | None = None) -> Iterator[TrainingExample]:
    """Training examples from the rows of an `hf:` source, at most `limit` (the first ones), validated row by row."""
    src = parse_hf(spec)
    rows = _rows(src)
    first = next(rows, None)
    if first is None:
        raise InputError(spec, None, None, f"split {src.split!r} has no rows")
    shape = shape_of(first, src.where(0), None)
    for i, row in enumerate(itertools.islice(itertools.chain([first], rows), limit)):
        try:
            yield example_from_object(row, shape, spec, i)
        except InputError as exc:
            raise InputError(src.where(i), None, exc.field, exc.message) from None


def _rows(src: HfSource) -> Iterator[dict[str, Any]]:
    """The rows, with what `datasets` raises when it cannot open or read them (no network, no such split, ...)
    turned into one PeftIRError naming the source and what to do."""
    try:
        yield from _open(src)
    except PeftIRError:
        raise
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else ""
        hint = "" if src.local else "; " + _todo(src)
        raise PeftIRError(f"{src.spec}: cannot read split {src.split!r} of {src.name} ({type(exc).__name__}: {msg})"
                          f"{hint}") from None
