"""BEIR folders: corpus.jsonl {_id,title,text}, queries.jsonl {_id,text}, qrels/<split>.tsv (query-id corpus-id score)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from peft_ir.atomic import atomic_open
from peft_ir.data.textfile import get_field, iter_jsonl, iter_tsv, parse_int
from peft_ir.data.trec import Qrels
from peft_ir.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    title: str
    text: str

    def joined(self, sep: str = " ") -> str:
        """Title and text joined as BEIR's dense baselines do ("title text"); no leading space for empty titles."""
        return f"{self.title}{sep}{self.text}" if self.title else self.text


def iter_corpus(path: str | Path) -> Iterator[Document]:
    """Stream a BEIR corpus.jsonl. Duplicate ids fail; documents with no title and no text are kept and counted."""
    seen: set[str] = set()
    empty = 0
    for lineno, obj in iter_jsonl(path):
        doc_id = get_field(obj, "_id", str, path, lineno)
        if not doc_id:
            raise InputError(path, lineno, "_id", "empty")
        if doc_id in seen:
            raise InputError(path, lineno, "_id", f"duplicate document id {doc_id!r}")
        seen.add(doc_id)
        title = get_field(obj, "title", str, path, lineno, required=False, default="")
        text = get_field(obj, "text", str, path, lineno)
        if not title.strip() and not text.strip():
            empty += 1
        yield Document(doc_id, title, text)
    if empty:
        log.warning("%s: %d document(s) with empty title and text (kept; they encode as empty strings)", path, empty)


def load_corpus(path: str | Path) -> dict[str, Document]:
    return {doc.id: doc for doc in iter_corpus(path)}


def read_queries(path: str | Path) -> dict[str, str]:
    """Read a BEIR queries.jsonl into {qid: text}; empty query text and duplicate ids fail."""
    queries: dict[str, str] = {}
    for lineno, obj in iter_jsonl(path):
        qid = get_field(obj, "_id", str, path, lineno)
        text = get_field(obj, "text", str, path, lineno)
        if not text.strip():
            raise InputError(path, lineno, "text", "empty query text")
        if qid in queries:
            raise InputError(path, lineno, "_id", f"duplicate query id {qid!r}")
        queries[qid] = text
    return queries


def read_beir_qrels(path: str | Path) -> Qrels:
    """Read BEIR qrels (tab-separated, optional header `query-id corpus-id score`)."""
    qrels: Qrels = {}
    columns = ("query-id", "corpus-id", "score")
    for lineno, fields in iter_tsv(path, columns):
        if lineno == 1 and fields[0] == "query-id":
            continue
        if len(fields) > 3:
            raise InputError(path, lineno, None, f"expected 3 tab-separated fields ({', '.join(columns)}), got {len(fields)}")
        qid, docid, score = fields
        grade = parse_int(score, path, lineno, "score")
        if docid in qrels.get(qid, {}):
            raise InputError(path, lineno, "corpus-id", f"duplicate judgement for ({qid!r}, {docid!r})")
        qrels.setdefault(qid, {})[docid] = grade
    return qrels


def write_corpus(docs: Iterable[Document], path: str | Path) -> None:
    with atomic_open(path) as fh:
        for d in docs:
            fh.write(json.dumps({"_id": d.id, "title": d.title, "text": d.text}, ensure_ascii=False) + "\n")


def write_queries(queries: dict[str, str], path: str | Path) -> None:
    with atomic_open(path) as fh:
        for qid, text in queries.items():
            fh.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")


def write_beir_qrels(qrels: Qrels, path: str | Path) -> None:
    with atomic_open(path) as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid, docs in qrels.items():
            for docid, grade in docs.items():
                fh.write(f"{qid}\t{docid}\t{grade}\n")


@dataclass(frozen=True)
class BeirDataset:
    """A BEIR folder and one qrels split; queries are restricted to those judged in the split."""

    root: Path
    split: str = "test"

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        for p in (self.corpus_path, self.queries_path, self.qrels_path):
            if not p.is_file():
                raise InputError(p, None, None, f"not found: {self.root} is not a BEIR folder with split {self.split!r}")

    @property
    def corpus_path(self) -> Path:
        return self.root / "corpus.jsonl"

    @property
    def queries_path(self) -> Path:
        return self.root / "queries.jsonl"

    @property
    def qrels_path(self) -> Path:
        return self.root / "qrels" / f"{self.split}.tsv"

    def qrels(self) -> Qrels:
        return read_beir_qrels(self.qrels_path)

    def queries(self) -> dict[str, str]:
        """The split's judged queries (every judged query must exist in queries.jsonl)."""
        all_queries = read_queries(self.queries_path)
        qrels = self.qrels()
        missing = [q for q in qrels if q not in all_queries]
        if missing:
            raise InputError(self.qrels_path, None, "query-id",
                             f"{len(missing)} judged query id(s) absent from {self.queries_path}, e.g. {missing[0]!r}")
        return {qid: all_queries[qid] for qid in qrels}
