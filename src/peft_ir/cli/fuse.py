"""`peft-ir fuse`: combine two or more TREC runs by reciprocal rank fusion or normalised score interpolation."""

from __future__ import annotations

import argparse

from peft_ir.cli.flags import add_flags
from peft_ir.indexing.config import FusionConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fuse", help="fuse two or more runs (RRF or normalised score interpolation)",
                       description="Fuse runs. RRF: sum of w/(k + rank), ranks by score desc then docid desc "
                                   "(trec_eval). Interpolation: sum of w * normalised score per query; a document missing "
                                   "from a run gets 0 from that run after normalisation.")
    p.add_argument("--runs", required=True, nargs="+", help="two or more TREC run files")
    add_flags(p, FusionConfig)
    p.add_argument("--output", required=True, help="fused TREC run to write")
    p.add_argument("--tag", default=None, help="run tag (default: the method name)")
    p.set_defaults(func=run_fuse)


def run_fuse(args: argparse.Namespace) -> int:
    from peft_ir.data import read_run, write_run
    from peft_ir.errors import PeftIRError
    from peft_ir.indexing.fusion import fuse

    if args.hits < 1:
        raise PeftIRError(f"--hits must be at least 1, got {args.hits}")
    runs = [read_run(path) for path in args.runs]
    fused = fuse(runs, args.method, k=args.k, norm=args.norm, weights=args.weights, hits=args.hits)
    tag = args.tag or (f"rrf-k{args.k:g}" if args.method == "rrf" else f"interpolate-{args.norm}")
    write_run(fused, args.output, tag=tag, hits=args.hits)
    print(f"fused {len(runs)} runs ({args.method}) over {len(fused)} queries into {args.output}")
    return 0
