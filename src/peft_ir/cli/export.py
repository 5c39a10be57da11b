"""`peft-ir export`: a trained model as a folder sentence-transformers, transformers or peft load, with a model card.

`peft-ir export TRAIN_DIR --format sentence-transformers|cross-encoder|hf|peft --output DIR [--merge]`.
"""

from __future__ import annotations

import argparse
import shlex

from peft_ir.cli.flags import add_flags, config_from_args
from peft_ir.export.config import ExportConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="a trained model as a sentence-transformers, cross-encoder, transformers or "
                                      "peft folder with a model card", description=__doc__.splitlines()[0])
    p.add_argument("train_dir", metavar="TRAIN_DIR", help="a training output folder (`peft-ir train ... --output`, or "
                                                          "runs/<name>/retriever|reranker of `peft-ir run`)")
    add_flags(p, ExportConfig)
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from peft_ir.export.build import export_model

    cfg = config_from_args(ExportConfig, args)
    command = shlex.join(["peft-ir", "export", args.train_dir, "--format", cfg.format, "--output", cfg.output,
                          *(["--merge"] if cfg.merge else [])])
    s = export_model(args.train_dir, cfg, command=command)
    how = "merged weights" if s["merged"] else "peft adapter" if s["format"] == "peft" else "base + peft-ir module"
    print(f"{s['kind']} ({s['method']}, {how}) exported as {s['format']} to {s['output']}: {len(s['files'])} files, "
          f"{s['bytes'] / 1e6:.1f} MB, model card README.md")
    return 0
