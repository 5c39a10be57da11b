"""`peft-ir bm25 index` and `peft-ir bm25 search`: Lucene BM25 (and RM3) through Pyserini."""

from __future__ import annotations

import argparse
import json
import logging

from peft_ir.cli.flags import add_flags
from peft_ir.indexing.config import BM25Config

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bm25", help="BM25 through Pyserini/Lucene: build an index, search it")
    cmds = p.add_subparsers(dest="bm25_command", required=True, metavar="SUBCOMMAND")

    i = cmds.add_parser("index", help="index a corpus (contents = title + ' ' + text) with Lucene")
    i.add_argument("--corpus", required=True, help="BEIR folder or corpus.jsonl, MS MARCO collection.tsv, irds:ID")
    i.add_argument("--index", required=True, help="index folder to write (replaced atomically when complete)")
    i.add_argument("--threads", type=int, default=None, help="indexing threads (default: CPU count, at most 8)")
    i.add_argument("--store-raw", action="store_true", help="also store each document's JSON in the index")
    i.set_defaults(func=run_index)

    s = cmds.add_parser("search", help="search a BM25 index with topics and write a TREC run")
    s.add_argument("--index", required=True, help="index folder written by `peft-ir bm25 index`")
    s.add_argument("--topics", required=True, help="topics tsv, queries.jsonl, BEIR folder (with --split) or irds:ID")
    s.add_argument("--split", default="test", help="split of a BEIR folder whose judged queries are searched")
    s.add_argument("--output", required=True, help="TREC run to write")
    s.add_argument("--hits", type=int, default=1000)
    add_flags(s, BM25Config)
    s.add_argument("--rm3", action="store_true", help="RM3 pseudo-relevance feedback")
    s.add_argument("--fb-terms", type=int, default=10, help="RM3 expansion terms")
    s.add_argument("--fb-docs", type=int, default=10, help="RM3 feedback documents")
    s.add_argument("--original-query-weight", type=float, default=0.5, help="RM3 weight of the original query")
    s.add_argument("--tag", default=None, help="run tag (default: bm25 or bm25+rm3)")
    s.set_defaults(func=run_search)


def run_index(args: argparse.Namespace) -> int:
    from peft_ir.data import iter_documents
    from peft_ir.indexing.bm25 import build_index, default_threads

    threads = args.threads or default_threads()
    manifest = build_index(iter_documents(args.corpus), args.index, threads=threads, store_raw=args.store_raw,
                           source=str(args.corpus))
    print(f"indexed {manifest['counters']['indexed']} of {manifest['documents']} documents into {args.index} "
          f"({manifest['seconds']} s)")
    return 0


def run_search(args: argparse.Namespace) -> int:
    from peft_ir.data import load_topics, write_run
    from peft_ir.indexing.bm25 import BM25Searcher, Rm3, default_threads

    rm3 = Rm3(args.fb_terms, args.fb_docs, args.original_query_weight) if args.rm3 else None
    topics = load_topics(args.topics, args.split)
    searcher = BM25Searcher(args.index, k1=args.k1, b=args.b, rm3=rm3)
    try:
        run = searcher.search(topics, hits=args.hits, threads=args.threads or default_threads())
    finally:
        searcher.close()
    tag = args.tag or ("bm25+rm3" if rm3 else "bm25")
    write_run(run, args.output, tag=tag, hits=args.hits)
    empty = sum(1 for hits in run.values() if not hits)
    log.info("settings: %s", json.dumps(searcher.describe()))
    print(f"searched {len(topics)} topics ({empty} with no hit) into {args.output}")
    return 0
