"""`peft-ir annotate`: a teacher's scores for each training query's positives and first-stage candidates, as a
scored training file (see peft_ir.teacher.annotate)."""

from __future__ import annotations

import argparse

from peft_ir.cli.flags import add_flags, config_from_args
from peft_ir.devices import DEVICE_CHOICES, parse_device
from peft_ir.teacher.config import AnnotateConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("annotate", help="score training queries' positives and run candidates with a teacher",
                       description="Write a scored training file {query_id, query, passages: [{docid, title, text, "
                                   "label, score}]}: for every judged query of --dataset's --split (or every example "
                                   "of --train), its positives and its top --depth hits in --run, scored by "
                                   "--teacher. Resumable: re-run the same command after an interruption.")
    add_flags(p, AnnotateConfig)
    p.add_argument("--device", type=parse_device, default="auto",
                   help=f"{DEVICE_CHOICES}; auto: a GPU if torch sees one, else the CPU")
    p.set_defaults(func=run_annotate)


def run_annotate(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from peft_ir.devices import device_for_process
    from peft_ir.teacher.annotate import annotate, record_path

    t0 = time.perf_counter()
    cfg = config_from_args(AnnotateConfig, args)
    s = annotate(cfg, device_for_process(args.device))
    teacher = s.record["teacher"]
    if s.reused:
        print(f"{cfg.output} is already complete for this teacher and these inputs ({s.queries} queries); kept")
        return 0
    resumed = f", resumed after {s.resumed_from}" if s.resumed_from else ""
    print(f"scored {s.passages} passages of {s.queries} queries with the {teacher['kind']} teacher {teacher['path']} "
          f"({s.scored_queries} queries scored now{resumed}) into {cfg.output} in {time.perf_counter() - t0:.0f} s; "
          f"teacher recorded in {record_path(Path(cfg.output))}")
    return 0
