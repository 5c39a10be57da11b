"""RM3 pseudo-relevance feedback through Pyserini/Anserini (Lavrenko & Croft's relevance model, interpolated with
the original query), over an index from `peft-ir bm25 index` (which stores the document vectors RM3 needs).

`peft-ir bm25 search --rm3 --fb-terms 10 --fb-docs 10 --original-query-weight 0.5` is the command-line form.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from peft_ir.data.trec import Run
from peft_ir.indexing.bm25 import BM25Searcher, Rm3


def rm3_search(index: str | Path, topics: Mapping[str, str], *, hits: int = 1000, k1: float = 0.9, b: float = 0.4,
               fb_terms: int = 10, fb_docs: int = 10, original_query_weight: float = 0.5, threads: int = 1) -> Run:
    """BM25 + RM3 run over `topics`."""
    searcher = BM25Searcher(index, k1=k1, b=b, rm3=Rm3(fb_terms, fb_docs, original_query_weight))
    try:
        return searcher.search(topics, hits=hits, threads=threads)
    finally:
        searcher.close()


def feedback_terms(index: str | Path, query: str, *, k1: float = 0.9, b: float = 0.4, fb_terms: int = 10,
                   fb_docs: int = 10, original_query_weight: float = 0.5) -> dict[str, float]:
    """The weighted terms of RM3's expanded query for one query (to inspect what feedback adds)."""
    searcher = BM25Searcher(index, k1=k1, b=b, rm3=Rm3(fb_terms, fb_docs, original_query_weight))
    try:
        terms = searcher.searcher.get_feedback_terms(query) or {}  # None when feedback finds no term
        return {str(t): float(w) for t, w in terms.items()}
    finally:
        searcher.close()
