"""BM25 (and BM25 + RM3) over a Lucene index built and searched through Pyserini / Anserini.

Indexing is "flat", as in Pyserini's BEIR flat indexes: one field `contents` = title + " " + text. Documents are
converted to Anserini's JsonCollection ({"id", "contents"} per line) in a temporary folder, then indexed by
Anserini's IndexCollection with positions and document vectors (RM3 needs the vectors). The index is written under
a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from peft_ir.atomic import atomic_path
from peft_ir.data.beir import Document
from peft_ir.data.trec import Run
from peft_ir.errors import PeftIRError

log = logging.getLogger(__name__)

MANIFEST = "peft_ir_bm25.json"


@dataclass(frozen=True, slots=True)
class Rm3:
    """RM3 pseudo-relevance feedback (Anserini's defaults)."""

    fb_terms: int = 10
    fb_docs: int = 10
    original_query_weight: float = 0.5

    def __post_init__(self) -> None:
        if self.fb_terms < 1 or self.fb_docs < 1:
            raise PeftIRError(f"RM3 needs fb_terms >= 1 and fb_docs >= 1, got {self.fb_terms} and {self.fb_docs}")
        if not 0.0 <= self.original_query_weight <= 1.0:
            raise PeftIRError(f"RM3 original_query_weight must lie in [0, 1], got {self.original_query_weight}")


def write_json_collection(docs: Iterable[Document], folder: Path, shards: int = 1) -> int:
    """Write documents as Anserini JsonCollection files (`contents` = title + " " + text); returns the count.

    Documents are dealt round-robin into `shards` files so that Anserini's indexing threads each get one.
    """
    folder.mkdir(parents=True, exist_ok=True)
    shards = max(1, shards)
    files = [open(folder / f"docs{i:03d}.jsonl", "w", encoding="utf-8") for i in range(shards)]
    n = 0
    try:
        for doc in docs:
            files[n % shards].write(json.dumps({"id": doc.id, "contents": doc.joined(" ")}, ensure_ascii=False) + "\n")
            n += 1
    finally:
        for fh in files:
            fh.close()
    return n


def build_index(docs: Iterable[Document], index_dir: str | Path, threads: int = 1, *, store_raw: bool = False,
                source: str | None = None, memory_buffer_mb: int | None = None) -> dict[str, Any]:
    """Index `docs` with Lucene (BM25-ready, positions and document vectors) into `index_dir`; returns the manifest."""
    from peft_ir.indexing.java import autoclass  # noqa: PLC0415

    index_dir = Path(index_dir)
    threads = max(1, int(threads))
    started = time.time()
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{index_dir.name}.collection-", dir=index_dir.parent) as coll:
        n_docs = write_json_collection(docs, Path(coll), shards=threads)
        if n_docs == 0:
            raise PeftIRError(f"no documents to index{f' in {source}' if source else ''}")
        log.info("indexing %d documents with %d thread(s)", n_docs, threads)
        with atomic_path(index_dir) as tmp:
            args = autoclass("io.anserini.index.IndexCollection$Args")()
            args.collectionClass = "JsonCollection"
            args.generatorClass = "DefaultLuceneDocumentGenerator"
            args.input = str(Path(coll).resolve())
            args.index = str(tmp.resolve())
            args.threads = threads
            args.storePositions = True
            args.storeDocvectors = True
            args.storeRaw = bool(store_raw)
            args.optimize = True  # one segment: same index whatever the thread count
            args.quiet = True
            if memory_buffer_mb:
                args.memoryBuffer = int(memory_buffer_mb)
            indexer = autoclass("io.anserini.index.IndexCollection")(args)
            try:
                indexer.run()
            except Exception as exc:  # noqa: BLE001  (a JavaException: the message names the cause)
                raise PeftIRError(f"Lucene indexing failed: {exc}") from exc
            counters = indexer.getCounters()
            stats = {name: int(getattr(counters, name).get())
                     for name in ("indexed", "empty", "unindexable", "skipped", "errors")}
            if stats["errors"] or stats["indexed"] == 0:
                raise PeftIRError(f"Lucene indexing failed: {stats}")
            if stats["indexed"] != n_docs:
                log.warning("indexed %d of %d documents (Anserini skips empty ones): %s", stats["indexed"], n_docs, stats)
            manifest = {
                "format": "flat (contents = title + ' ' + text)",
                "source": source,
                "documents": n_docs,
                "counters": stats,
                "positions": True,
                "docvectors": True,
                "raw": bool(store_raw),
                "anserini_jar": _jar_name(),
                "pyserini": _pyserini_version(),
                "seconds": round(time.time() - started, 1),
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _jar_name() -> str:
    from peft_ir.indexing.java import anserini_jar  # noqa: PLC0415

    return anserini_jar().name


def _pyserini_version() -> str | None:
    try:
        from importlib.metadata import version  # noqa: PLC0415

        return version("pyserini")
    except Exception:  # noqa: BLE001
        return None


MAX_CLAUSES = 1 << 20  # query terms Lucene accepts (its default, 1,024, is below a long query's distinct terms)


class BM25Searcher:
    """Batch BM25 (optionally + RM3) search over an index written by `build_index` (or any Pyserini Lucene index)."""

    def __init__(self, index_dir: str | Path, k1: float = 0.9, b: float = 0.4, rm3: Rm3 | None = None):
        from peft_ir.indexing.java import lucene  # noqa: PLC0415

        self.path = Path(index_dir)
        if not self.path.is_dir() or not any(p.name.startswith("segments_") for p in self.path.iterdir()):
            raise PeftIRError(f"{self.path}: not a Lucene index (no segments_N file); build one with `peft-ir bm25 index`")
        if k1 < 0 or not 0.0 <= b <= 1.0:
            raise PeftIRError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        try:
            self.searcher = lucene().LuceneSearcher(str(self.path))
        except Exception as exc:  # noqa: BLE001
            raise PeftIRError(f"could not open Lucene index {self.path}: {exc}") from exc
        self.searcher.set_bm25(float(k1), float(b))
        # Lucene refuses a query of more than 1,024 clauses (distinct terms: a long argument, a query2doc expansion)
        # with an exception that fails the whole batch; Anserini's own search raises the limit too
        from peft_ir.indexing.java import autoclass  # noqa: PLC0415

        autoclass("org.apache.lucene.search.IndexSearcher").setMaxClauseCount(MAX_CLAUSES)
        self.k1, self.b, self.rm3 = k1, b, rm3
        if rm3 is not None:
            if not self.searcher.object.reader.getTermVectors(0):
                raise PeftIRError(f"{self.path}: RM3 needs document vectors, which this index does not store")
            self.searcher.set_rm3(rm3.fb_terms, rm3.fb_docs, float(rm3.original_query_weight))

    @property
    def num_docs(self) -> int:
        return int(self.searcher.num_docs)

    def search(self, topics: Mapping[str, str], hits: int = 1000, threads: int = 1, batch_size: int = 10_000) -> Run:
        """Search every topic; returns {qid: {docid: score}} in topic order (queries with no hit map to {})."""
        if hits < 1:
            raise PeftIRError(f"--hits must be at least 1, got {hits}")
        qids = list(topics)
        run: Run = {}
        for start in range(0, len(qids), batch_size):
            batch = qids[start:start + batch_size]
            results = self.searcher.batch_search([topics[q] for q in batch], batch, k=int(hits), threads=int(threads))
            for qid in batch:
                run[qid] = {h.docid: float(h.score) for h in results.get(qid, [])}
        return run

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": str(self.path), "k1": self.k1, "b": self.b}
        if self.rm3 is not None:
            out["rm3"] = asdict(self.rm3)
        return out

    def close(self) -> None:
        obj = getattr(self.searcher, "object", None)
        if obj is not None:
            obj.close()


def default_threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))
