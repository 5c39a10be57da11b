"""`peft-ir quickstart`: the README's main job — zero-shot dense retrieval on the embedded SciFact, evaluated."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

DEFAULT_DATASET = Path(__file__).resolve().parents[3] / "data" / "scifact"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quickstart", help="encode -> index -> search -> eval on BEIR SciFact with the default model")
    p.add_argument("--dataset", default=str(DEFAULT_DATASET), help="BEIR folder (default: the embedded SciFact)")
    p.add_argument("--split", default="test")
    p.add_argument("--model", default=None, help="default: embedded all-MiniLM-L6-v2")
    p.add_argument("--workdir", default="runs/quickstart", help="where embeddings, index and run go (resumable)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--hits", type=int, default=1000)
    p.set_defaults(func=run_quickstart)


def run_quickstart(args: argparse.Namespace) -> int:
    from peft_ir.data import BeirDataset, iter_corpus, write_run
    from peft_ir.eval import default_measures, evaluate, metrics_table
    from peft_ir.indexing.dense import DenseIndex, build_index
    from peft_ir.indexing.search import dense_search
    from peft_ir.retriever import BiEncoder, EncoderSpec, encode_corpus

    t0 = time.perf_counter()
    work = Path(args.workdir)
    ds = BeirDataset(Path(args.dataset), args.split)
    queries, qrels = ds.queries(), ds.qrels()
    n_docs = sum(1 for _ in iter_corpus(ds.corpus_path))
    print(f"[1/4] encode {n_docs} documents of {ds.root.name} with {args.model or 'all-MiniLM-L6-v2'} "
          f"(title + text, max length 256) -> {work / 'embeddings'}")
    encoder = BiEncoder(EncoderSpec(model=args.model, passage_max_length=256))
    encode_corpus(encoder, iter_corpus(ds.corpus_path), work / "embeddings", batch_size=args.batch_size, total=n_docs)
    print(f"[2/4] index (FAISS Flat, inner product) -> {work / 'index'}")
    build_index(work / "embeddings", work / "index", "Flat")
    index = DenseIndex(work / "index")
    index.check_encoder(encoder.manifest())
    print(f"[3/4] search {len(queries)} {args.split} queries, top {args.hits} -> {work / 'run.trec'}")
    run = dense_search(encoder, [index], queries, args.hits, batch_size=args.batch_size)
    write_run(run, work / "run.trec", tag="minilm-zeroshot", hits=args.hits)
    print(f"[4/4] evaluate against {ds.qrels_path}")
    metrics = evaluate(qrels, run, default_measures(qrels, "beir"))
    print(metrics_table({f"{ds.root.name} {args.split} zero-shot": metrics}), end="")
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return 0
