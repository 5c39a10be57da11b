"""Resolve what a user names on the command line (a file, a BEIR folder, an `irds:` id) to topics, qrels, corpora."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from peft_ir.data.beir import BeirDataset, Document, iter_corpus, read_beir_qrels, read_queries
from peft_ir.data.irds import irds_documents, irds_qrels, irds_topics, is_irds
from peft_ir.data.msmarco import iter_collection
from peft_ir.data.textfile import iter_lines
from peft_ir.data.trec import Qrels, read_topics, read_trec_qrels
from peft_ir.errors import InputError


def load_topics(spec: str | Path, split: str = "test") -> dict[str, str]:
    """Topics from a BEIR folder (judged queries of `split`), a queries.jsonl, a qid<TAB>text file or an irds id."""
    spec = str(spec)
    if is_irds(spec):
        return irds_topics(spec)
    p = Path(spec)
    if p.is_dir():
        return BeirDataset(p, split).queries()
    return read_queries(p) if p.suffix == ".jsonl" else read_topics(p)


def _qrels_file_format(p: Path) -> str:
    """'beir' for a BEIR qrels tsv (header, or three tab-separated fields), else 'trec'; judged on the first line."""
    for _, line in iter_lines(p):
        fields = line.split()
        if fields[:3] == ["query-id", "corpus-id", "score"] or ("\t" in line and len(line.split("\t")) == 3):
            return "beir"
        return "trec"
    raise InputError(p, None, None, "empty qrels file")


def qrels_source(spec: str | Path) -> str:
    """What kind of qrels `spec` names, so that evaluation can pick measures by collection rather than by grades:
    'beir' (a BEIR folder or BEIR qrels tsv), 'trec' (a TREC qrels file) or the `irds:` id itself."""
    spec = str(spec)
    if is_irds(spec):
        return spec
    p = Path(spec)
    return "beir" if p.is_dir() else _qrels_file_format(p)


def load_qrels(spec: str | Path, split: str = "test") -> Qrels:
    """Qrels from a BEIR folder, a BEIR qrels tsv (with header), a TREC qrels file or an irds id."""
    spec = str(spec)
    if is_irds(spec):
        return irds_qrels(spec)
    p = Path(spec)
    if p.is_dir():
        return BeirDataset(p, split).qrels()
    return read_beir_qrels(p) if _qrels_file_format(p) == "beir" else read_trec_qrels(p)


def iter_documents(spec: str | Path) -> Iterator[Document]:
    """Documents from a BEIR folder or corpus.jsonl, an MS MARCO collection.tsv or an irds id."""
    spec = str(spec)
    if is_irds(spec):
        return irds_documents(spec)
    p = Path(spec)
    if p.is_dir():
        p = p / "corpus.jsonl"
    return iter_corpus(p) if p.suffix == ".jsonl" else iter_collection(p)
