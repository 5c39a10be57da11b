"""`peft-ir train retriever` and `peft-ir mine`: tune a bi-encoder with any method; mine hard negatives."""

from __future__ import annotations

import argparse

from peft_ir.cli.dense import add_encoder_flags, spec_from_args


def add_tuning_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default="iaa-l", help="full, bitfit, adapter, parallel, prefix, lora, mam, iaa-s, iaa-l, iaa-m")
    p.add_argument("--budget", default=None, help="target share of trainable parameters, e.g. 0.5%% (sets the sizes)")
    p.add_argument("--tuning", nargs="*", default=[], metavar="KEY=VALUE",
                   help="explicit method sizes, e.g. r=12 ar=12 lora_r=16 prefix_len=32")


def tuning_from_args(args: argparse.Namespace, model) -> object:  # type: ignore[no-untyped-def]
    from peft_ir.errors import PeftIRError
    from peft_ir.tuning import TuningConfig, budget_config

    fixed = {}
    for item in args.tuning:
        if "=" not in item:
            raise PeftIRError(f"--tuning expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        fixed[key] = _parse_value(value)
    if args.budget:
        return budget_config(model, args.method, args.budget, **fixed)
    return TuningConfig.from_dict({"method": args.method, **fixed})


def _parse_value(value: str):  # type: ignore[no-untyped-def]
    import json

    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train a retriever or reranker with a PEFT method")
    tsub = t.add_subparsers(dest="what", required=True, metavar="WHAT")
    r = tsub.add_parser("retriever", help="contrastive bi-encoder training (InfoNCE, in-batch + hard negatives)")
    r.add_argument("--train", required=True, help="BEIR folder (with --split) or training file (Tevatron/FlagEmbedding/triples)")
    r.add_argument("--split", default="train")
    r.add_argument("--output", required=True, help="run folder: adapter/, checkpoints/, metrics.jsonl, curves.png")
    r.add_argument("--negatives-run", default=None, help="first-stage TREC run to mine hard negatives from")
    r.add_argument("--negatives-window", nargs=2, type=int, default=(1, 100), metavar=("FROM", "TO"))
    r.add_argument("--num-negatives", type=int, default=1, help="hard negatives per query per batch (0: in-batch only)")
    add_encoder_flags(r)
    add_tuning_flags(r)
    r.add_argument("--batch-size", type=int, default=16, help="queries per device per step")
    r.add_argument("--grad-accum", type=int, default=1)
    r.add_argument("--cache-mini-batch", type=int, default=None, help="GradCache mini-batch size (large batches, small memory)")
    r.add_argument("--epochs", type=float, default=1.0)
    r.add_argument("--max-steps", type=int, default=-1)
    r.add_argument("--lr", type=float, default=None, help="default: 2e-5 for full, 1e-3 otherwise")
    r.add_argument("--warmup-ratio", type=float, default=0.1)
    r.add_argument("--temperature", type=float, default=0.05)
    r.add_argument("--dev-queries", type=int, default=50,
                   help="training queries held out for model selection (0: none, the last step is kept)")
    r.add_argument("--dev-seed", type=int, default=None,
                   help="seed of the held-out dev queries and the mined negative pools (default: --seed);"
                        " fix it to compare seeds on one dev set")
    r.add_argument("--dev-corpus", type=int, default=2000, help="passages in the dev corpus")
    r.add_argument("--eval-steps", type=int, default=50)
    r.add_argument("--save-steps", type=int, default=50)
    r.add_argument("--logging-steps", type=int, default=10)
    r.add_argument("--seed", type=int, default=42)
    r.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint in --output")
    r.set_defaults(func=run_train_retriever)
    from peft_ir.cli.rerank import register_reranker  # noqa: PLC0415  (cli/rerank.py imports this module)
    register_reranker(tsub)

    m = sub.add_parser("mine", help="write hard negatives from a first-stage run as a training file")
    m.add_argument("--run", required=True, help="first-stage TREC run (BM25 or dense)")
    m.add_argument("--dataset", required=True, help="BEIR folder (queries, qrels split, corpus)")
    m.add_argument("--split", default="train")
    m.add_argument("--output", required=True, help="training file to write (Tevatron-v2 jsonl)")
    m.add_argument("--window", nargs=2, type=int, default=(1, 100), metavar=("FROM", "TO"), help="rank window")
    m.add_argument("--num", type=int, default=8, help="negatives per query")
    m.add_argument("--seed", type=int, default=0)
    m.set_defaults(func=run_mine)


def run_train_retriever(args: argparse.Namespace) -> int:
    from peft_ir.retriever.encoder import BiEncoder
    from peft_ir.retriever.train import RetrieverTrainConfig, train_retriever

    spec = spec_from_args(args)
    probe = BiEncoder(spec, device="cpu")
    tuning = tuning_from_args(args, probe.hf_model)
    del probe
    cfg = RetrieverTrainConfig(
        train=args.train, output=args.output, split=args.split, negatives_run=args.negatives_run,
        negatives_from=args.negatives_window[0], negatives_to=args.negatives_window[1],
        num_negatives=args.num_negatives, encoder=spec, tuning=tuning, batch_size=args.batch_size,  # type: ignore[arg-type]
        grad_accum=args.grad_accum, cache_mini_batch=args.cache_mini_batch, epochs=args.epochs,
        max_steps=args.max_steps, lr=args.lr, warmup_ratio=args.warmup_ratio, temperature=args.temperature,
        dev_queries=args.dev_queries, dev_seed=args.dev_seed, dev_corpus=args.dev_corpus, eval_steps=args.eval_steps,
        save_steps=args.save_steps, logging_steps=args.logging_steps, seed=args.seed, resume=args.resume)
    s = train_retriever(cfg)
    if s:
        print(f"{s['method']}: {s['trainable']:,} trainable of {s['total']:,} ({s['share']:.3%}); {s['steps']} steps in "
              f"{s['wall_seconds']:.0f} s; {selection_note(s)}; adapter in {args.output}/adapter")
    return 0


def selection_note(summary: dict) -> str:  # type: ignore[type-arg]
    """How a training run chose its weights, for the closing line."""
    if summary.get("dev_metric") is None:
        return "no dev queries: the last step's weights"
    return f"best {summary['dev_metric']} {summary['best_dev']:.4f}"


def run_mine(args: argparse.Namespace) -> int:
    from peft_ir.data import BeirDataset, load_corpus, read_run, write_training
    from peft_ir.data.examples import beir_examples, mine_negatives

    ds = BeirDataset(args.dataset, args.split)
    negatives = mine_negatives(read_run(args.run), ds.qrels(), depth_from=args.window[0], depth_to=args.window[1],
                               num=args.num, seed=args.seed)
    examples = beir_examples(ds, load_corpus(ds.corpus_path), negatives)
    write_training(examples, args.output, "tevatron")
    print(f"wrote {len(examples)} queries with {sum(len(e.negatives) for e in examples)} negatives to {args.output}")
    return 0
