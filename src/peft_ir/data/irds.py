"""`ir_datasets` ids (`irds:msmarco-passage/dev/small`), imported lazily: the package and its downloads are optional.

Topics, qrels and corpora for search and evaluation; training triples (`irds:msmarco-passage/train/triples-small`:
docpairs of query id, relevant doc id, non-relevant doc id) joined with their texts for both trainers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from peft_ir.data.beir import Document
from peft_ir.data.training import TrainingExample
from peft_ir.data.trec import Qrels
from peft_ir.errors import InputError, PeftIRError

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


# -- training triples ---------------------------------------------------------------------------------------------
class MissingPackage(PeftIRError):
    """ir_datasets is not installed."""


def _training_dataset(spec: str) -> Any:
    """The ir_datasets dataset of a training source; refused when it offers no (query, doc a, doc b) docpairs."""
    try:
        import ir_datasets  # noqa: F401, PLC0415 - optional dependency
    except ImportError:
        raise MissingPackage(f"{spec}: the ir_datasets package is not installed: pip install ir_datasets (it "
                             "downloads the triples and texts on first use, network needed once), or export the "
                             "triples to a training file (Tevatron jsonl) and name that") from None
    ds = _load(spec)
    if not (ds.has_docpairs() and ds.has_queries() and ds.has_docs()):
        raise PeftIRError(f"{spec}: ir_datasets id {spec[len(PREFIX):]!r} has no training triples (docpairs with "
                          "their queries and documents); use e.g. irds:msmarco-passage/train/triples-small")
    return ds


def irds_training_note(spec: str) -> str | None:
    """What `peft-ir run --check` says of an `irds:` training source, without downloading: refuse an unknown id or
    one without triples (when the package is here to tell); note that the files are fetched at run time."""
    try:
        _training_dataset(spec)
    except MissingPackage as exc:
        return f"{exc}; install it before the run"
    return f"{spec}: read through ir_datasets, which downloads its files on first use (network needed once)"


def require_irds_training(spec: str, *, peek: bool = True) -> None:
    """Fail now, before any model is loaded, when the triples cannot be read: no ir_datasets package, an unknown id,
    or (with `peek`, which reads the first pair and so starts a first download) no network to fetch them."""
    ds = _training_dataset(spec)
    if peek:
        _fetch(spec, "training triples", lambda: next(iter(ds.docpairs_iter()), None))


def irds_examples(spec: str, limit: int | None = None, negatives: int | None = None) -> list[TrainingExample]:
    """Training examples from an ir_datasets id's docpairs (query_id, doc_id_a, doc_id_b: a relevant, b not),
    streamed and grouped by query: doc a's are the positives, up to `negatives` doc b's the negatives (the first
    seen), texts joined from the queries and the docs store. With `limit`, the first `limit` queries seen only,
    and reading stops once each of them has its negatives."""
    ds = _training_dataset(spec)

    def read() -> list[TrainingExample]:
        queries = {q.query_id: q.text for q in ds.queries_iter()}
        groups: dict[str, tuple[list[str], list[str]]] = {}
        full = 0
        for i, pair in enumerate(ds.docpairs_iter()):
            group = groups.get(pair.query_id)
            if group is None:
                if pair.query_id not in queries:
                    raise InputError(f"{spec} pair {i}", None, "query_id",
                                     f"{pair.query_id!r} is not among the dataset's queries")
                if limit is not None and len(groups) >= limit:
                    continue
                group = groups[pair.query_id] = ([], [])
            pos, neg = group
            if pair.doc_id_a not in pos:
                pos.append(pair.doc_id_a)
            if pair.doc_id_b not in neg and (negatives is None or len(neg) < negatives):
                neg.append(pair.doc_id_b)
                full += negatives is not None and len(neg) == negatives
            if limit is not None and len(groups) >= limit and negatives is not None and full >= len(groups):
                break
        wanted = {d for pos, neg in groups.values() for d in (*pos, *neg)}
        docs = ds.docs_store().get_many(wanted)
        absent = wanted - docs.keys()
        if absent:
            raise InputError(spec, None, "doc_id", f"{len(absent)} docid(s) of the triples are absent from the docs "
                                                   f"store, e.g. {sorted(absent)[0]!r}")
        text = {d: _joined(doc) for d, doc in docs.items()}
        return [TrainingExample(queries[q], [text[d] for d in pos], [text[d] for d in neg], q)
                for q, (pos, neg) in groups.items()]

    return _fetch(spec, "training triples", read)


def _joined(doc: Any) -> str:
    title, body = getattr(doc, "title", "") or "", getattr(doc, "text", "") or ""
    return f"{title} {body}" if title else body
