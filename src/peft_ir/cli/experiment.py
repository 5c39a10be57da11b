"""`peft-ir run CONFIG.yaml` (one experiment, resumable) and `peft-ir report RUN_DIR...` (tables over runs)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("run", help="run an experiment config: train, encode, index, search, re-rank, evaluate",
                       description="Run every stage of an experiment config into <output>/<name>/; stages whose "
                                   "outputs exist are skipped, so re-running resumes. Relative paths in the config "
                                   "are resolved against the working directory.")
    r.add_argument("config", help="experiment YAML (see configs/)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set retriever.max_steps=40 (value read as YAML; repeatable)")
    r.add_argument("--check", action="store_true",
                   help="validate the config, print it resolved (each key with its help text) and list the stages; "
                        "run nothing")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.set_defaults(func=run_experiment)

    p = sub.add_parser("report", help="paper-style table, significance and curves over finished run folders")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders written by `peft-ir run`")
    p.add_argument("--output", required=True, help="folder for report.md and the PNG figures")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of the paired t-tests")
    p.add_argument("--skip-incomplete", action="store_true", help="leave out folders whose run has not finished")
    p.set_defaults(func=run_report)


def run_experiment(args: argparse.Namespace) -> int:
    from peft_ir.eval import metrics_table
    from peft_ir.experiment import load_config, to_yaml
    from peft_ir.experiment.pipeline import Pipeline

    cfg = load_config(args.config, args.overrides)
    pipeline = Pipeline(cfg, progress=not args.no_progress)
    if args.check:
        print(to_yaml(cfg, comments=True), end="")
        for k, stage in enumerate(pipeline.stages(), 1):
            print(f"[{k}] {stage.title}{' (done)' if stage.done() else ''}")
        return 0
    metrics = pipeline.run()
    for name, s in metrics["sets"].items():
        print(f"{cfg.name}, test set {name}:")
        print(metrics_table({kind: r["means"] for kind, r in s["runs"].items()}), end="")
    print(f"run folder: {pipeline.dir.root} (report.md, metrics.json)")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from peft_ir.experiment.report import build_report

    print(build_report(args.runs, args.output, alpha=args.alpha, skip_incomplete=args.skip_incomplete))
    print(f"written to {args.output}/report.md")
    return 0
