"""`ir_datasets` ids (`irds:msmarco-passage/dev/small`), imported lazily: the package and its downloads are optional."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from peft_ir.data.beir import Document
from peft_ir.data.trec import Qrels
from peft_ir.errors import PeftIRError

PREFIX = "irds:"


def is_irds(spec: str) -> bool:
    return str(spec).startswith(PREFIX)


def _load(spec: str) -> Any:
    dataset_id = spec[len(PREFIX):]
    try:
        import ir_datasets  # noqa: PLC0415 - optional dependency
    except ImportError:
        raise PeftIRError(f"{spec}: the ir_datasets package is not installed (pip install ir_datasets)") from None
    try:
        return ir_datasets.load(dataset_id)
    except KeyError:
        raise PeftIRError(f"{spec}: unknown ir_datasets id {dataset_id!r}") from None


def _fetch(spec: str, what: str, fn):  # type: ignore[no-untyped-def]
    try:
        return fn()
    except PeftIRError:
        raise
    except Exception as exc:  # ir_datasets raises many kinds when it cannot download
        raise PeftIRError(
            f"{spec}: could not read the {what} of ir_datasets id {spec[len(PREFIX):]!r}; ir_datasets downloads "
            f"its files on first use, which needs a network connection ({type(exc).__name__}: {exc})"
        ) from None


def irds_topics(spec: str) -> dict[str, str]:
    ds = _load(spec)
    return _fetch(spec, "queries", lambda: {q.query_id: q.text for q in ds.queries_iter()})


def irds_qrels(spec: str) -> Qrels:
    ds = _load(spec)

    def read() -> Qrels:
        out: Qrels = {}
        for q in ds.qrels_iter():
            out.setdefault(q.query_id, {})[q.doc_id] = int(q.relevance)
        return out

    return _fetch(spec, "qrels", read)


def irds_documents(spec: str) -> Iterator[Document]:
    ds = _load(spec)
    it = _fetch(spec, "documents", ds.docs_iter)
    for d in it:
        yield Document(d.doc_id, getattr(d, "title", "") or "", getattr(d, "text", "") or "")
