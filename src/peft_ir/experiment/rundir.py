"""The run folder `<output>/<name>/`: its layout, the resolved config that guards it, the log and the timings.

A folder belongs to exactly one resolved config: re-running the same config resumes it; a different config is
refused with the keys that differ, so results in one folder never mix two experiments; and one `peft-ir run` at a
time holds it, so a second launch of the same config cannot write the same files beside the first. The config
names its data files by path: inputs.json records their contents (size, modification time and a hash), so that a
file edited in place after stages have used it (a corrected qrels file, a re-exported corpus) is refused on resume
rather than leaving outputs of the old content marked done.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from peft_ir.atomic import atomic_open
from peft_ir.errors import PeftIRError
from peft_ir.fingerprint import file_hash
from peft_ir.experiment.config import ExperimentConfig
from peft_ir.experiment.loading import to_yaml

CONFIG = "config.resolved.yaml"
INPUTS = "inputs.json"
LOCK = ".lock"  # held (an OS lock, released when the process ends, however it ends) while a run works in the folder
# Keys that judge or watch a run but never shape its outputs: changing them resumes the run.
NOT_SHAPING = ("expect", "expect_tolerance", "retriever.report_to", "reranker.report_to")


class RunDir:
    """Paths inside one run folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @classmethod
    def of(cls, cfg: ExperimentConfig) -> RunDir:
        return cls(Path(cfg.output) / cfg.name)

    config = property(lambda self: self.root / CONFIG)
    log = property(lambda self: self.root / "log.txt")
    timings = property(lambda self: self.root / "timings.json")
    metrics = property(lambda self: self.root / "metrics.json")
    report = property(lambda self: self.root / "report.md")
    retriever = property(lambda self: self.root / "retriever")
    reranker = property(lambda self: self.root / "reranker")
    embeddings = property(lambda self: self.root / "embeddings")
    index = property(lambda self: self.root / "index")
    bm25_index = property(lambda self: self.root / "bm25-index")
    runs = property(lambda self: self.root / "runs")
    # fuse_weight: auto: the re-ranker's dev queries (topics, qrels) and the weight chosen on them
    dev_topics = property(lambda self: self.root / "rerank-dev" / "queries.jsonl")
    dev_qrels = property(lambda self: self.root / "rerank-dev" / "qrels.tsv")
    fuse_weight = property(lambda self: self.root / "fuse-weight.json")
    # a teacher section: the start model's encoding, index and runs of the training queries, the scored file
    teacher = property(lambda self: self.root / "teacher")
    teacher_scored = property(lambda self: self.root / "teacher" / "train.scored.jsonl")

    def run_file(self, split: str, kind: str) -> Path:
        """runs/<test set, 'train' or 'rerank-dev'>.<dense|bm25|fused|reranked|reranked-fused>.trec"""
        return self.runs / f"{split}.{kind}.trec"

    # -- the resolved config ------------------------------------------------------------------------------------
    def claim(self, cfg: ExperimentConfig) -> bool:
        """Write config.resolved.yaml (first of all outputs), or check that the one there matches; True if resumed."""
        text = to_yaml(cfg)
        if self.config.is_file():
            old = yaml.safe_load(self.config.read_text(encoding="utf-8")) or {}
            new = yaml.safe_load(text)
            diffs = [d for d in differences(old, new) if not _tolerated(d[0], old, d[2])]
            if diffs:
                shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diffs[:8])
                more = f" (and {len(diffs) - 8} more)" if len(diffs) > 8 else ""
                raise PeftIRError(f"{self.root} holds a run of a different config ({shown}{more}); "
                                  f"choose another name (--set name=...) or output, or delete {self.root}")
            if old != new:  # only expectations, tracking or settings added since changed: record them
                with atomic_open(self.config) as fh:
                    fh.write(text)
            return True
        if self.root.is_dir() and any(self.root.iterdir()):
            raise PeftIRError(f"{self.root} already holds files that `peft-ir run` did not write (no {CONFIG}); "
                              "choose another name (--set name=...) or output, or delete the folder")
        with atomic_open(self.config) as fh:
            fh.write(text)
        return False

    def check_inputs(self, paths: list[Path]) -> None:
        """Record the content of each input file (a folder: each file in it), or, on resume, refuse one whose
        content changed since. Size and modification time decide without reading; a file whose time moved but whose
        hash is the same (copied, touched) is recorded anew."""
        record_path = self.root / INPUTS
        old: dict[str, dict[str, Any]] = self.read_json(record_path) or {}
        new: dict[str, dict[str, Any]] = {}
        for path in paths:
            for f in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
                key, st = str(f.resolve()), f.stat()
                seen = old.get(key)
                if seen and (seen["size"], seen["mtime_ns"]) == (st.st_size, st.st_mtime_ns):
                    new[key] = seen
                    continue
                new[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "hash": file_hash(f)}
                if seen and seen["hash"] != new[key]["hash"]:
                    raise PeftIRError(f"{f} changed since {self.root} began (its finished stages used the old "
                                      f"content, {INPUTS}): run into a new folder (--set name=...), or delete "
                                      f"{self.root} to start again")
        if new != old:
            with atomic_open(record_path) as fh:
                json.dump({**old, **new}, fh, indent=1)

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the folder for this process, or refuse at once: two runs of one config would train, encode and write
        the same files at the same time, each over the other's."""
        from filelock import FileLock, Timeout  # noqa: PLC0415

        lock = FileLock(self.root / LOCK, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise PeftIRError(f"{self.root} is in use by another `peft-ir run` (it holds {self.root / LOCK}); wait "
                              "for it to finish or stop it, then run again to resume") from None
        try:
            yield
        finally:
            lock.release()

    # -- log and timings ------------------------------------------------------------------------------------------
    def append_log(self, line: str) -> None:
        """log.txt is append-only (a log, not a result): one time-stamped line per event."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a", encoding="utf-8") as fh:
            fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    def record_time(self, stage: str, seconds: float) -> None:
        timings = self.read_json(self.timings) or {}
        timings[stage] = round(seconds, 1)
        with atomic_open(self.timings) as fh:
            json.dump(timings, fh, indent=2)

    @staticmethod
    def read_json(path: Path) -> Any:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def differences(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every leaf that differs between two plain configs."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in list(old) + [k for k in new if k not in old]:
            dotted = f"{prefix}.{key}" if prefix else str(key)
            out += differences(old.get(key), new.get(key), dotted)
        return out
    return [] if old == new else [(prefix, old, new)]


def _tolerated(key: str, old: dict[str, Any], new_value: Any) -> bool:
    """A difference that does not make the run another one: a key that never shapes outputs, or a setting added
    to peft-ir after the run folder was written, at its default (new settings keep the old behaviour by default)."""
    if key in NOT_SHAPING or key.split(".")[0] in NOT_SHAPING:
        return True
    return not _present(old, key) and new_value == _default(key)


def _present(data: Any, key: str) -> bool:
    for part in key.replace("[", ".[").split("."):
        if part.startswith("["):
            index = int(part[1:-1])
            if not isinstance(data, list) or index >= len(data):
                return False
            data = data[index]
        elif isinstance(data, dict) and part in data:
            data = data[part]
        else:
            return False
    return True


def _default(key: str) -> Any:
    """The plain default of a dotted config key (list items by their item type); a sentinel when it has none."""
    import dataclasses  # noqa: PLC0415
    import typing  # noqa: PLC0415

    from peft_ir.experiment.schema import to_plain  # noqa: PLC0415
    from peft_ir.settings import field_types, optional_inner  # noqa: PLC0415

    cls: Any = ExperimentConfig
    value: Any = _NO_DEFAULT
    for part in key.split("."):
        name = part.split("[")[0]
        fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
        if name not in fields:
            return _NO_DEFAULT
        f = fields[name]
        if f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            value = _NO_DEFAULT if f.default is dataclasses.MISSING else f.default
        cls = optional_inner(field_types(cls)[name])
        if "[" in part and typing.get_origin(cls) is list:
            (cls,) = typing.get_args(cls)
            value = _NO_DEFAULT
    return to_plain(value) if value is not _NO_DEFAULT else value


_NO_DEFAULT = object()
