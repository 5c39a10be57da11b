"""`peft-ir train retriever|reranker|reranker-data` and `peft-ir mine`: tune a bi-encoder or a cross-encoder with
any method; write training files with hard negatives. The training flags are the config fields (cli/flags.py)."""

from __future__ import annotations

import argparse

from peft_ir.cli.flags import add_flags, add_tuning_flags, config_from_args, selection_note, tuning_from_args
from peft_ir.devices import DEVICE_CHOICES, parse_device
from peft_ir.reranker.config import RerankerTrainConfig
from peft_ir.retriever.config import RetrieverTrainConfig
from peft_ir.teacher.config import TeacherMiningConfig


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train a retriever or reranker with a PEFT method")
    tsub = t.add_subparsers(dest="what", required=True, metavar="WHAT")
    r = tsub.add_parser("retriever", help="bi-encoder training (InfoNCE with in-batch + hard negatives, or "
                                          "distillation: margin-mse, kl)")
    add_flags(r, RetrieverTrainConfig, skip=("adapter", "extra"))
    add_tuning_flags(r)
    r.set_defaults(func=run_train_retriever)

    c = tsub.add_parser("reranker", help="cross-encoder training (lce, bce, or distillation: margin-mse, kl)")
    add_flags(c, RerankerTrainConfig)
    add_tuning_flags(c)
    c.set_defaults(func=run_train_reranker)

    d = tsub.add_parser("reranker-data", help="MS MARCO-domain reranker training file: BM25 negatives over the positive pool")
    d.add_argument("--positives", required=True, help="train-positives.jsonl {query_id, query, positive_id, positive}")
    d.add_argument("--index", required=True, help="BM25 index folder of the positive pool (built if absent)")
    d.add_argument("--output", required=True, help="training file to write (FlagEmbedding jsonl)")
    d.add_argument("--depth", type=int, default=30, help="BM25 hits searched per query")
    d.add_argument("--num-negatives", type=int, default=30)
    d.add_argument("--max-queries", type=int, default=None)
    d.add_argument("--threads", type=int, default=None)
    d.set_defaults(func=run_reranker_data)

    m = sub.add_parser("mine", help="write hard negatives from a first-stage run as a training file",
                       description="Sample --num negatives per query from the --window ranks of --run, judged "
                                   "positives excluded. With --teacher, candidates the teacher scores above the "
                                   "query's lowest-scored positive minus --margin are dropped first (likely "
                                   "unjudged relevant passages); the teacher's scores are kept in --teacher-scores.")
    m.add_argument("--run", required=True, help="first-stage TREC run (BM25 or dense)")
    m.add_argument("--dataset", required=True, help="BEIR folder (queries, qrels split, corpus)")
    m.add_argument("--split", default="train")
    m.add_argument("--output", required=True, help="training file to write (Tevatron-v2 jsonl)")
    m.add_argument("--window", nargs=2, type=int, default=(1, 100), metavar=("FROM", "TO"), help="rank window")
    m.add_argument("--num", type=int, default=8, help="negatives per query")
    m.add_argument("--seed", type=int, default=0)
    add_flags(m, TeacherMiningConfig)
    m.add_argument("--device", type=parse_device, default="auto",
                   help=f"the teacher's device: {DEVICE_CHOICES}; auto: a GPU if torch sees one, else the CPU")
    m.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="progress bar of the teacher's scoring")
    m.set_defaults(func=run_mine)


def run_train_retriever(args: argparse.Namespace) -> int:
    from peft_ir.retriever.encoder import BiEncoder
    from peft_ir.retriever.train import train_retriever

    cfg = config_from_args(RetrieverTrainConfig, args)
    cfg.check()  # bad values and missing tracker packages, before the model is loaded to size the method
    probe = BiEncoder(cfg.encoder, device="cpu")
    cfg.tuning = tuning_from_args(args, probe.hf_model)
    del probe
    s = train_retriever(cfg)
    if s:
        print(f"{s['method']}: {s['trainable']:,} trainable of {s['total']:,} ({s['share']:.3%}); {s['steps']} steps in "
              f"{s['wall_seconds']:.0f} s; {selection_note(s)}; adapter in {args.output}/adapter")
    return 0


def run_train_reranker(args: argparse.Namespace) -> int:
    from peft_ir.reranker.model import load_base
    from peft_ir.reranker.training import train_reranker

    cfg = config_from_args(RerankerTrainConfig, args)
    cfg.check()  # bad values and missing tracker packages, before the model is loaded to size the method
    probe, _ = load_base(cfg.cross_encoder, device="cpu")
    cfg.tuning = tuning_from_args(args, probe)
    del probe
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


def run_mine(args: argparse.Namespace) -> int:
    from peft_ir.data import BeirDataset, load_corpus, read_run, write_training
    from peft_ir.data.examples import beir_examples, mine_negatives
    from peft_ir.errors import PeftIRError

    teacher = config_from_args(TeacherMiningConfig, args)
    if teacher.teacher is None:
        for name in ("margin", "teacher_scores", "teacher_weights"):
            if getattr(teacher, name) is not None:
                raise PeftIRError(f"--{name.replace('_', '-')} needs --teacher")
        ds = BeirDataset(args.dataset, args.split)
        negatives = mine_negatives(read_run(args.run), ds.qrels(), depth_from=args.window[0],
                                   depth_to=args.window[1], num=args.num, seed=args.seed)
        examples = beir_examples(ds, load_corpus(ds.corpus_path), negatives)
        filtered = ""
    else:
        from peft_ir.devices import device_for_process
        from peft_ir.teacher.mining import mine_with_teacher

        mined = mine_with_teacher(args.dataset, args.split, args.run, tuple(args.window), args.num, args.seed, teacher,
                                  args.output, device=device_for_process(args.device), progress=args.progress)
        examples, s = mined.examples, mined.stats
        filtered = (f"; the teacher-margin filter (margin {mined.margin:g}) dropped {s.dropped} of {s.candidates} "
                    f"candidates in the window; teacher scores in {mined.scores_path}")
    write_training(examples, args.output, "tevatron")
    print(f"wrote {len(examples)} queries with {sum(len(e.negatives) for e in examples)} negatives to "
          f"{args.output}{filtered}")
    return 0
