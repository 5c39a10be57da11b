"""`peft-ir rerank`: cross-encoder re-ranking of a run (training is `peft-ir train reranker`, cli/train.py)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, get_args

from peft_ir.cli.flags import add_flags, config_from_args, given_settings
from peft_ir.devices import DEVICE_CHOICES, parse_device
from peft_ir.precision import ComputeDtype
from peft_ir.reranker.config import CrossEncoderSpec, recorded_spec
from peft_ir.settings import flat_fields

if TYPE_CHECKING:  # the model module loads torch; the CLI's parser is built without it
    from peft_ir.reranker.model import CrossEncoder


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rerank", help="re-rank the top hits of a run with a (tuned) cross-encoder")
    p.add_argument("--run", required=True, help="first-stage TREC run")
    p.add_argument("--topics", required=True, help="topics tsv, queries.jsonl, BEIR folder (with --split) or irds:ID")
    p.add_argument("--split", default="test", help="split of a BEIR folder given as --topics")
    p.add_argument("--corpus", required=True, help="BEIR folder or corpus.jsonl, MS MARCO collection.tsv, irds:ID")
    add_flags(p, CrossEncoderSpec)
    p.add_argument("--adapter", default=None,
                   help="tuned weights (a training run's adapter/ folder); the cross_encoder.json beside it supplies "
                        "every setting above not given (base model, head, prefixes, token limits)")
    p.add_argument("--hits", type=int, default=100, help="re-rank this many top hits per query (deeper ones are dropped unless --keep-rest)")
    p.add_argument("--keep-rest", action="store_true",
                   help="append the deeper first-stage hits below the re-ranked ones, in their first-stage order")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--output", required=True, help="TREC run to write (the re-ranker alone)")
    p.add_argument("--fuse-weight", type=_weight, default=None, metavar="W|auto",
                   help="also write --fused-output: W * min-max(re-ranker) + (1 - W) * min-max(first stage) over the "
                        "re-ranked hits (0 < W < 1), deeper hits as --keep-rest says; auto: W chosen from 0, 0.1, .., "
                        "1 on the dev queries (--dev-run, --dev-topics, --dev-qrels), 0 being the first stage alone")
    p.add_argument("--fused-output", default=None, help="TREC run of the re-ranker fused with the first stage")
    p.add_argument("--dev-run", default=None, help="with --fuse-weight auto: the same first stage's run of dev queries")
    p.add_argument("--dev-topics", default=None, help="the dev queries (topics tsv, queries.jsonl, BEIR folder with "
                                                      "--dev-split, irds:ID)")
    p.add_argument("--dev-qrels", default=None,
                   help="their qrels (TREC, BEIR tsv, BEIR folder with --dev-split, irds:ID)")
    p.add_argument("--dev-split", default="dev", help="split of a BEIR folder given as --dev-topics / --dev-qrels")
    p.add_argument("--dev-measure", default=None, help="the measure the weight is chosen by (default nDCG@10)")
    p.add_argument("--dev-ignore-self", action="store_true", default=None,
                   help="judge the dev queries without hits whose docid equals the qid (ArguAna, Quora), as "
                        "`peft-ir eval --ignore-self` judges the test")
    p.add_argument("--dev-output", default=None, help="the re-ranked dev run (default: <output stem>.dev<suffix>; its "
                                                      "score cache beside it makes a rerun resume)")
    p.add_argument("--cache", default=None,
                   help="score cache (default: .<output>.scores-<model hash>.jsonl beside it; each line names its "
                        "model, so another model's scores are never reused)")
    p.add_argument("--tag", default="peft-ir-rerank")
    p.add_argument("--device", type=parse_device, default="auto",
                   help=f"{DEVICE_CHOICES}; auto: a GPU if torch sees one, else the CPU")
    p.add_argument("--dtype", choices=get_args(ComputeDtype), default="float32",
                   help="compute precision (peft_ir.precision): bfloat16 under autocast, on the CPU about 2x faster "
                        "where it has AVX512-BF16 or AMX; float16 needs a GPU; scores of another precision get a "
                        "score cache of their own")
    p.set_defaults(func=run_rerank)


def _weight(value: str) -> float | str:
    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1 or auto, got {value!r}") from None


DEV_FLAGS = ("dev_run", "dev_topics", "dev_qrels", "dev_measure", "dev_ignore_self", "dev_output")


def check_fusion(args: argparse.Namespace) -> None:
    """Every fusion option before the model loads: the weight, its output, and with auto the dev inputs."""
    from pathlib import Path

    from peft_ir.errors import PeftIRError

    if (args.fuse_weight is None) != (args.fused_output is None):
        raise PeftIRError("--fuse-weight and --fused-output go together: the weight, and where the fused run goes")
    given = [f"--{name.replace('_', '-')}" for name in DEV_FLAGS if getattr(args, name) is not None]
    if args.fuse_weight != "auto":
        if given:
            raise PeftIRError(f"{', '.join(given)} serve --fuse-weight auto only (the weight chosen on dev queries)")
        if args.fuse_weight is not None and not 0.0 < args.fuse_weight < 1.0:
            raise PeftIRError(f"--fuse-weight must lie strictly between 0 (the first stage alone) and 1 (the re-ranker "
                              f"alone), got {args.fuse_weight}; or auto, to choose it on dev queries")
        return
    missing = [f"--{n.replace('_', '-')}" for n in ("dev_run", "dev_topics", "dev_qrels") if getattr(args, n) is None]
    if missing:
        raise PeftIRError(f"--fuse-weight auto chooses the weight on dev queries: give {', '.join(missing)} (a run of "
                          "the dev queries by the same first stage, the queries, their qrels)")
    for name in ("dev_run", "dev_topics", "dev_qrels"):
        value = getattr(args, name)
        if not value.startswith("irds:") and not Path(value).exists():
            flag = f"--{name.replace('_', '-')}"
            raise PeftIRError(f"{flag} {value}: not found")
    if args.dev_measure is not None:
        from peft_ir.eval import parse_measures

        parse_measures([args.dev_measure])
    if args.dev_output is None:
        out = Path(args.output)
        args.dev_output = str(out.with_name(f"{out.stem}.dev{out.suffix}"))
    if Path(args.dev_output).resolve() in {Path(p).resolve() for p in (args.output, args.fused_output, args.run)}:
        raise PeftIRError(f"--dev-output {args.dev_output} is also another input or output: name another file")
    from peft_ir.data import load_topics

    dev = load_topics(args.dev_topics, args.dev_split)
    test = load_topics(args.topics, args.split)
    shared = [q for q, text in dev.items() if test.get(q) == text]
    if shared:
        raise PeftIRError(f"--dev-topics shares {len(shared)} of its {len(dev)} queries with --topics (same id and "
                          f"text, e.g. {shared[0]!r}): the weight would be chosen on the queries it is judged on; "
                          "hold out dev queries from the training split")


def run_rerank(args: argparse.Namespace) -> int:
    import time

    from peft_ir.devices import device_for_process
    from peft_ir.precision import torch_dtype
    from peft_ir.reranker.model import CrossEncoder
    from peft_ir.reranker.rerank import rerank_files

    check_fusion(args)
    spec = cross_encoder_spec(args)
    t0 = time.perf_counter()
    encoder = CrossEncoder(spec, adapter=args.adapter, device=device_for_process(args.device),
                           dtype=torch_dtype(args.dtype))
    stats = rerank_files(args.run, args.topics, args.corpus, encoder, args.output, hits=args.hits,
                         batch_size=args.batch_size, split=args.split, cache_path=args.cache, tag=args.tag,
                         keep_rest=args.keep_rest)
    print(f"re-ranked {stats.pairs} pairs of {stats.queries} queries ({stats.scored} scored, "
          f"{stats.pairs - stats.scored} from the cache) into {args.output} in {time.perf_counter() - t0:.0f} s")
    if args.fuse_weight is None:
        return 0
    from peft_ir.indexing.fusion import write_fused_reranked

    weight = args.fuse_weight
    if weight == "auto":
        weight = choose_on_dev(args, encoder)
    write_fused_reranked(args.run, args.output, weight, args.hits, args.fused_output, keep_rest=args.keep_rest,
                         tag=f"{args.tag}-fused")
    print(f"fused with the first stage (re-ranker weight {weight:g}) into {args.fused_output}")
    return 0


def cross_encoder_spec(args: argparse.Namespace) -> CrossEncoderSpec:
    """The flags' spec, where --adapter is a training output's: what its cross_encoder.json records fills each setting
    the command line did not give, so that the adapter is scored as it was trained (its head, prefixes, lengths)."""
    found = recorded_spec(args.adapter) if args.adapter else None
    if found is None:
        return config_from_args(CrossEncoderSpec, args)
    path, recorded = found
    given = given_settings(args)
    taken = {f.name: getattr(recorded, f.field.name) for f in flat_fields(CrossEncoderSpec)
             if f.name not in given and getattr(recorded, f.field.name) != getattr(args, f.name)}
    if taken:
        print(f"from {path}: {', '.join(f'{k}={v!r}' for k, v in taken.items())}")
    return config_from_args(CrossEncoderSpec, args, **taken)


def choose_on_dev(args: argparse.Namespace, encoder: CrossEncoder) -> float:
    """Re-rank the dev run (cached), choose the weight on it, print the grid and write it beside --fused-output."""
    import json
    from pathlib import Path

    from peft_ir.atomic import atomic_open
    from peft_ir.data import load_qrels, read_run
    from peft_ir.eval.fuse_weight import DEFAULT_MEASURE, choose_fuse_weight
    from peft_ir.reranker.rerank import rerank_files

    stats = rerank_files(args.dev_run, args.dev_topics, args.corpus, encoder, args.dev_output, hits=args.hits,
                         batch_size=args.batch_size, split=args.dev_split, tag=f"{args.tag}-dev",
                         keep_rest=args.keep_rest)
    print(f"re-ranked {stats.pairs} dev pairs of {stats.queries} queries ({stats.pairs - stats.scored} from the "
          f"cache) into {args.dev_output}")
    choice = choose_fuse_weight(read_run(args.dev_run), read_run(args.dev_output),
                                load_qrels(args.dev_qrels, args.dev_split), args.dev_measure or DEFAULT_MEASURE,
                                hits=args.hits, keep_rest=args.keep_rest, ignore_self=bool(args.dev_ignore_self))
    out = Path(args.fused_output)
    with atomic_open(out.with_name(f"{out.name}.fuse-weight.json")) as fh:
        json.dump(choice.to_json(), fh, indent=1)
    print("\n".join(choice.table()))
    print(choice.verdict())
    return choice.weight
