"""`peft-ir run CONFIG.yaml` (one experiment, resumable) and `peft-ir report RUN_DIR...` (tables over runs)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("run", help="run an experiment config: train, encode, index, search, re-rank, evaluate",
                       description="Run every stage of an experiment config into <output>/<name>/; stages whose "
                                   "outputs exist are skipped, so re-running resumes. Relative paths in the config "
                                   "are resolved against the working directory.")
    r.add_argument("config", nargs="?", help="experiment YAML (see configs/)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set retriever.max_steps=40 (value read as YAML; repeatable)")
    r.add_argument("--check", action="store_true",
                   help="validate the config, print it resolved (each key with its help text) and list the stages; "
                        "run nothing")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.add_argument("--check-expected", metavar="RUN_DIR", default=None,
                   help="re-check a finished run's metrics.json against the `expect:` block of its config (or of "
                        "CONFIG when given); runs nothing")
    r.set_defaults(func=run_experiment)

    p = sub.add_parser("report", help="paper-style table, significance and curves over finished run folders")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders written by `peft-ir run`")
    p.add_argument("--output", required=True, help="folder for report.md and the PNG figures")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of the paired t-tests")
    p.add_argument("--skip-incomplete", action="store_true", help="leave out folders whose run has not finished")
    p.set_defaults(func=run_report)


def run_experiment(args: argparse.Namespace) -> int:
    from peft_ir.errors import PeftIRError
    from peft_ir.eval import metrics_table
    from peft_ir.experiment import load_config, to_yaml
    from peft_ir.experiment.evaluation import across_sets
    from peft_ir.experiment.pipeline import Pipeline

    if args.check_expected:
        return check_run(args.check_expected, args.config, args.overrides)
    if args.config is None:
        raise PeftIRError("name a config to run (or --check-expected RUN_DIR to re-check a finished run)")
    notes: list[str] | None = [] if args.check else None
    cfg = load_config(args.config, args.overrides, notes=notes)
    pipeline = Pipeline(cfg, progress=not args.no_progress)
    if args.check:
        print(to_yaml(cfg, comments=True), end="")
        for k, stage in enumerate(pipeline.stages(), 1):
            print(f"[{k}] {stage.title}{' (done)' if stage.done() else ''}")
        for note in notes or []:
            print(f"note: {note}")
        return 0
    metrics = pipeline.run(check=False)
    for name, s in metrics["sets"].items():
        print(f"{cfg.name}, test set {name}:")
        print(metrics_table({kind: r["means"] for kind, r in s["runs"].items()}), end="")
    table = across_sets(metrics)
    if table:
        print(f"{cfg.name}, {table[0]} across test sets (the mean is unweighted over sets):")
        print(metrics_table(table[1]), end="")
    if "fuse_weight" in metrics:
        from peft_ir.eval.fuse_weight import WeightChoice

        print(WeightChoice.from_json(metrics["fuse_weight"]).verdict())
    print(f"run folder: {pipeline.dir.root} (report.md, metrics.json)")
    pipeline.check(metrics)  # after the table: a miss shows what was measured, then fails the run
    return 0


def check_run(run_dir: str, config: str | None, overrides: list[str]) -> int:
    """`peft-ir run --check-expected RUN_DIR`: the run's metrics.json against an `expect:` block."""
    from pathlib import Path

    from peft_ir.errors import PeftIRError
    from peft_ir.experiment import load_config
    from peft_ir.experiment.expect import check_expected
    from peft_ir.experiment.rundir import CONFIG, RunDir

    root = Path(run_dir)
    metrics = RunDir.read_json(root / "metrics.json")
    if not metrics:
        raise PeftIRError(f"{root}: no metrics.json (not a finished `peft-ir run` folder)")
    cfg = load_config(config or root / CONFIG, overrides, check_files=False)
    if not cfg.expect:
        raise PeftIRError(f"{config or root / CONFIG}: no `expect:` block to check")
    checks = check_expected(cfg, metrics)
    for c in checks:
        print(f"ok  {c.line()}")
    print(f"{len(checks)} expected result(s) reproduced in {root} (tolerance {cfg.expect_tolerance:g})")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from peft_ir.experiment.report import build_report

    print(build_report(args.runs, args.output, alpha=args.alpha, skip_incomplete=args.skip_incomplete))
    print(f"written to {args.output}/report.md")
    return 0
