"""The `peft-ir` command: a thin layer that parses flags and calls the packages.

Each command group lives in its own module here and exposes `register(subparsers)`; heavy libraries are
imported inside the command functions so that `peft-ir --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from peft_ir.devices import close_process_group
from peft_ir.errors import PeftIRError

# One entry per command module; adding a command group touches this list only.
COMMAND_MODULES = ["eval", "dense", "train", "annotate", "tuning", "bm25", "fuse", "rewrite", "rerank",
                   "experiment", "export"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peft-ir", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"peft_ir.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    # our own messages at INFO; third-party libraries only when they warn (or with -v)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("peft_ir").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return int(args.func(args) or 0)
    except PeftIRError as exc:
        print(f"peft-ir {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # torch.load(weights_only=True) met a pickle that is not plain weights
        if type(exc).__name__ != "UnpicklingError":
            raise
        why = next((ln.strip() for ln in str(exc).splitlines() if "GLOBAL" in ln), "not plain tensors")
        print(f"peft-ir {args.command}: error: refused to load a checkpoint file holding more than weights "
              f"(a pickle that could run code): {why}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"peft-ir {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        close_process_group()  # before the interpreter's teardown, which gloo's threads can abort


if __name__ == "__main__":
    sys.exit(main())
