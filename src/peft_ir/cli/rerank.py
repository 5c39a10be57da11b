"""`peft-ir rerank`: cross-encoder re-ranking of a run (training is `peft-ir train reranker`, cli/train.py)."""

from __future__ import annotations

import argparse

from peft_ir.cli.flags import add_flags, config_from_args
from peft_ir.devices import DEVICE_CHOICES, parse_device
from peft_ir.reranker.config import CrossEncoderSpec


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rerank", help="re-rank the top hits of a run with a (tuned) cross-encoder")
    p.add_argument("--run", required=True, help="first-stage TREC run")
    p.add_argument("--topics", required=True, help="topics tsv, queries.jsonl, BEIR folder (with --split) or irds:ID")
    p.add_argument("--split", default="test", help="split of a BEIR folder given as --topics")
    p.add_argument("--corpus", required=True, help="BEIR folder or corpus.jsonl, MS MARCO collection.tsv, irds:ID")
    add_flags(p, CrossEncoderSpec)
    p.add_argument("--adapter", default=None, help="tuned weights (a training run's adapter/ folder)")
    p.add_argument("--hits", type=int, default=100, help="re-rank this many top hits per query (deeper ones are dropped unless --keep-rest)")
    p.add_argument("--keep-rest", action="store_true",
                   help="append the deeper first-stage hits below the re-ranked ones, in their first-stage order")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--output", required=True, help="TREC run to write (the re-ranker alone)")
    p.add_argument("--fuse-weight", type=float, default=None, metavar="W",
                   help="also write --fused-output: W * min-max(re-ranker) + (1 - W) * min-max(first stage) over the "
                        "re-ranked hits (0 < W < 1), deeper hits as --keep-rest says")
    p.add_argument("--fused-output", default=None, help="TREC run of the re-ranker fused with the first stage")
    p.add_argument("--cache", default=None, help="score cache (default: .<output>.scores-<model hash>.jsonl beside it)")
    p.add_argument("--tag", default="peft-ir-rerank")
    p.add_argument("--device", type=parse_device, default="auto",
                   help=f"{DEVICE_CHOICES}; auto: a GPU if torch sees one, else the CPU")
    p.set_defaults(func=run_rerank)


def run_rerank(args: argparse.Namespace) -> int:
    import time

    from peft_ir.devices import device_for_process
    from peft_ir.errors import PeftIRError
    from peft_ir.reranker.model import CrossEncoder
    from peft_ir.reranker.rerank import rerank_files

    if (args.fuse_weight is None) != (args.fused_output is None):
        raise PeftIRError("--fuse-weight and --fused-output go together: the weight, and where the fused run goes")
    if args.fuse_weight is not None and not 0.0 < args.fuse_weight < 1.0:
        raise PeftIRError(f"--fuse-weight must lie strictly between 0 (the first stage alone) and 1 (the re-ranker "
                          f"alone), got {args.fuse_weight}")
    t0 = time.perf_counter()
    encoder = CrossEncoder(config_from_args(CrossEncoderSpec, args), adapter=args.adapter, device=device_for_process(args.device))
    stats = rerank_files(args.run, args.topics, args.corpus, encoder, args.output, hits=args.hits,
                         batch_size=args.batch_size, split=args.split, cache_path=args.cache, tag=args.tag,
                         keep_rest=args.keep_rest)
    print(f"re-ranked {stats.pairs} pairs of {stats.queries} queries ({stats.scored} scored, "
          f"{stats.pairs - stats.scored} from the cache) into {args.output} in {time.perf_counter() - t0:.0f} s")
    if args.fuse_weight is not None:
        from peft_ir.data import read_run, write_run
        from peft_ir.indexing.fusion import fuse_reranked

        fused = fuse_reranked(read_run(args.run), read_run(args.output), args.fuse_weight, args.hits,
                              keep_rest=args.keep_rest)
        write_run(fused, args.fused_output, tag=f"{args.tag}-fused")
        print(f"fused with the first stage (re-ranker weight {args.fuse_weight:g}) into {args.fused_output}")
    return 0
