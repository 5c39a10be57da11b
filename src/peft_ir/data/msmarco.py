"""MS MARCO tsv collections (`pid<TAB>passage`); their queries are TREC topics (see `trec.read_topics`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from peft_ir.atomic import atomic_open
from peft_ir.data.beir import Document
from peft_ir.data.textfile import iter_tsv
from peft_ir.errors import InputError


def iter_collection(path: str | Path) -> Iterator[Document]:
    """Stream an MS MARCO collection.tsv as documents with an empty title; duplicate pids fail."""
    seen: set[str] = set()
    for lineno, fields in iter_tsv(path, ("pid", "passage")):
        pid = fields[0].strip()
        if pid in seen:
            raise InputError(path, lineno, "pid", f"duplicate passage id {pid!r}")
        seen.add(pid)
        yield Document(pid, "", "\t".join(fields[1:]))


def write_collection(docs: Iterable[Document], path: str | Path) -> None:
    with atomic_open(path) as fh:
        for d in docs:
            fh.write(f"{d.id}\t{' '.join(d.joined().split())}\n")
