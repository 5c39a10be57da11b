"""`peft-ir rerank` (cross-encoder re-ranking of a run), `peft-ir train reranker` and `peft-ir train reranker-data`."""

from __future__ import annotations

import argparse

from peft_ir.cli.train import add_tuning_flags, tuning_from_args
from peft_ir.devices import DEVICE_CHOICES, parse_device


def add_cross_encoder_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="base encoder: HF or sentence-transformers folder (default: all-MiniLM-L6-v2)")
    p.add_argument("--query-max-length", type=int, default=32, help="query tokens kept")
    p.add_argument("--passage-max-length", type=int, default=192, help="passage tokens kept")
    p.add_argument("--head-seed", type=int, default=42, help="seed of the new classification head")


def spec_from_args(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from peft_ir.reranker.model import CrossEncoderSpec

    return CrossEncoderSpec(model=args.model, query_max_length=args.query_max_length,
                            passage_max_length=args.passage_max_length, seed=args.head_seed)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rerank", help="re-rank the top hits of a run with a (tuned) cross-encoder")
    p.add_argument("--run", required=True, help="first-stage TREC run")
    p.add_argument("--topics", required=True, help="topics tsv, queries.jsonl, BEIR folder (with --split) or irds:ID")
    p.add_argument("--split", default="test", help="split of a BEIR folder given as --topics")
    p.add_argument("--corpus", required=True, help="BEIR folder or corpus.jsonl, MS MARCO collection.tsv, irds:ID")
    add_cross_encoder_flags(p)
    p.add_argument("--adapter", default=None, help="tuned weights (a training run's adapter/ folder)")
    p.add_argument("--hits", type=int, default=100, help="re-rank this many top hits per query (deeper ones are dropped unless --keep-rest)")
    p.add_argument("--keep-rest", action="store_true",
                   help="append the deeper first-stage hits below the re-ranked ones, in their first-stage order")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--output", required=True, help="TREC run to write")
    p.add_argument("--cache", default=None, help="score cache (default: .<output>.scores-<model hash>.jsonl beside it)")
    p.add_argument("--tag", default="peft-ir-rerank")
    p.add_argument("--device", type=parse_device, default="auto",
                   help=f"{DEVICE_CHOICES}; auto: a GPU if torch sees one, else the CPU")
    p.set_defaults(func=run_rerank)


def register_reranker(tsub: argparse._SubParsersAction) -> None:
    """Sub-commands of `peft-ir train` (called from cli/train.py)."""
    r = tsub.add_parser("reranker", help="cross-encoder training (LCE or BCE, BM25/run negatives)")
    r.add_argument("--train", required=True, help="BEIR folder (with --split, --negatives-run) or training file")
    r.add_argument("--split", default="train")
    r.add_argument("--output", required=True, help="run folder: adapter/, checkpoints/, metrics.jsonl, curves.png")
    r.add_argument("--negatives-run", default=None, help="first-stage TREC run; negatives = its non-relevant hits")
    r.add_argument("--negatives-window", nargs=2, type=int, default=(1, 100), metavar=("FROM", "TO"),
                   help="rank window of the run that negatives are sampled from (top-k: 1 k)")
    r.add_argument("--negatives-pool", type=int, default=32, help="negatives kept per query (groups and dev candidates)")
    add_cross_encoder_flags(r)
    add_tuning_flags(r)
    r.add_argument("--loss", choices=("lce", "bce"), default="lce")
    r.add_argument("--group-size", type=int, default=8, help="1 positive + (group size - 1) negatives per query")
    r.add_argument("--batch-size", type=int, default=8, help="queries per device per step")
    r.add_argument("--grad-accum", type=int, default=1)
    r.add_argument("--epochs", type=float, default=1.0)
    r.add_argument("--max-steps", type=int, default=-1)
    r.add_argument("--max-queries", type=int, default=None, help="train on this many queries only (seeded subset)")
    r.add_argument("--lr", type=float, default=None, help="default: 2e-5 for full, 1e-3 otherwise")
    r.add_argument("--head-lr", type=float, default=None,
                   help="rate of the new head (and a pooler that trains with it); default: --lr for PEFT methods, "
                        "1e-3 for full")
    r.add_argument("--warmup-ratio", type=float, default=0.1)
    r.add_argument("--dev-queries", type=int, default=50,
                   help="training queries held out for model selection (0: none, the last step is kept)")
    r.add_argument("--dev-seed", type=int, default=None,
                   help="seed of the held-out dev queries and the mined negative pools (default: --seed);"
                        " fix it to compare seeds on one dev set")
    r.add_argument("--dev-candidates", type=int, default=30, help="candidates re-ranked per dev query")
    r.add_argument("--eval-batch-size", type=int, default=64)
    r.add_argument("--eval-steps", type=int, default=50)
    r.add_argument("--save-steps", type=int, default=50)
    r.add_argument("--logging-steps", type=int, default=10)
    r.add_argument("--seed", type=int, default=42)
    r.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint in --output")
    r.set_defaults(func=run_train_reranker)

    d = tsub.add_parser("reranker-data", help="MS MARCO-domain reranker training file: BM25 negatives over the positive pool")
    d.add_argument("--positives", required=True, help="train-positives.jsonl {query_id, query, positive_id, positive}")
    d.add_argument("--index", required=True, help="BM25 index folder of the positive pool (built if absent)")
    d.add_argument("--output", required=True, help="training file to write (FlagEmbedding jsonl)")
    d.add_argument("--depth", type=int, default=30, help="BM25 hits searched per query")
    d.add_argument("--num-negatives", type=int, default=30)
    d.add_argument("--max-queries", type=int, default=None)
    d.add_argument("--threads", type=int, default=None)
    d.set_defaults(func=run_reranker_data)


def run_rerank(args: argparse.Namespace) -> int:
    import time

    from peft_ir.devices import device_for_process
    from peft_ir.reranker.model import CrossEncoder
    from peft_ir.reranker.rerank import rerank_files

    t0 = time.perf_counter()
    encoder = CrossEncoder(spec_from_args(args), adapter=args.adapter, device=device_for_process(args.device))
    stats = rerank_files(args.run, args.topics, args.corpus, encoder, args.output, hits=args.hits,
                         batch_size=args.batch_size, split=args.split, cache_path=args.cache, tag=args.tag,
                         keep_rest=args.keep_rest)
    print(f"re-ranked {stats.pairs} pairs of {stats.queries} queries ({stats.scored} scored, "
          f"{stats.pairs - stats.scored} from the cache) into {args.output} in {time.perf_counter() - t0:.0f} s")
    return 0


def run_train_reranker(args: argparse.Namespace) -> int:
    from peft_ir.reranker.model import load_base
    from peft_ir.cli.train import selection_note
    from peft_ir.reranker.training import RerankerTrainConfig, train_reranker

    spec = spec_from_args(args)
    probe, _ = load_base(spec, device="cpu")
    tuning = tuning_from_args(args, probe)
    del probe
    cfg = RerankerTrainConfig(
        train=args.train, output=args.output, split=args.split, negatives_run=args.negatives_run,
        negatives_from=args.negatives_window[0], negatives_to=args.negatives_window[1],
        negatives_pool=args.negatives_pool, cross_encoder=spec, tuning=tuning, loss=args.loss,  # type: ignore[arg-type]
        group_size=args.group_size, batch_size=args.batch_size, grad_accum=args.grad_accum, epochs=args.epochs,
        max_steps=args.max_steps, max_queries=args.max_queries, lr=args.lr, head_lr=args.head_lr,
        warmup_ratio=args.warmup_ratio,
        dev_queries=args.dev_queries, dev_seed=args.dev_seed, dev_candidates=args.dev_candidates,
        eval_batch_size=args.eval_batch_size,
        eval_steps=args.eval_steps, save_steps=args.save_steps, logging_steps=args.logging_steps, seed=args.seed,
        resume=args.resume)
    s = train_reranker(cfg)
    if s:  # rank 0 under torchrun; the other ranks return nothing
        print(f"{s['method']} ({s['loss']}): {s['trainable']:,} trainable of {s['total']:,} ({s['share']:.3%}); "
              f"{s['steps']} steps in {s['wall_seconds']:.0f} s; {selection_note(s)}; adapter in {args.output}/adapter")
    return 0


def run_reranker_data(args: argparse.Namespace) -> int:
    from peft_ir.indexing.bm25 import default_threads
    from peft_ir.reranker.msmarco import build_training_set

    s = build_training_set(args.positives, args.index, args.output, depth=args.depth,
                           num_negatives=args.num_negatives, threads=args.threads or default_threads(),
                           max_queries=args.max_queries)
    print(f"wrote {s['queries']} queries ({s['without_negatives']} without negatives, {s['negatives']} negatives; "
          f"pool {s['pool']} passages) to {s['output']}")
    return 0
