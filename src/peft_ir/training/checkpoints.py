"""Checkpoints that hold only the trainable weights, and resuming from the last *complete* one."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

from peft_ir.errors import PeftIRError
from peft_ir.training.tracking import TENSORBOARD_DIR

# A finished training output's record, written last: its presence means the training is done.
SUMMARY_FILE = "summary.json"

log = logging.getLogger(__name__)

_CKPT = re.compile(r"^checkpoint-(\d+)$")
CHECKPOINTS_DIR = "checkpoints"  # <output>/checkpoints/checkpoint-N/adapter
COMPLETE_MARKER = "trainer_state.json"  # the Trainer writes it last


def training_output_of(adapter: str | Path) -> Path:
    """The training output folder an adapter folder belongs to: its parent for `<output>/adapter`, and `<output>`
    for a checkpoint's `<output>/checkpoints/checkpoint-N/adapter` (whose spec the training writes only once, at
    the end, into `<output>`)."""
    parent = Path(adapter).parent
    if _CKPT.match(parent.name) and parent.parent.name == CHECKPOINTS_DIR:
        return parent.parent.parent
    return parent


def last_complete_checkpoint(folder: str | Path) -> Path | None:
    """The highest-step checkpoint whose trainer state was written; half-written ones are removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = sorted(((int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _CKPT.match(p.name))),
                   reverse=True)
    for _, path in found:
        if _complete(path):
            return path
        log.warning("removing incomplete checkpoint %s (interrupted while saving)", path)
        shutil.rmtree(path, ignore_errors=True)
    return None


def _complete(path: Path) -> bool:
    """The Trainer writes its state last and not atomically: it must exist and parse, as must our adapter config."""
    from peft_ir.tuning.checkpoint import ADAPTER_DIR, CONFIG_FILE  # noqa: PLC0415

    try:
        json.loads((path / COMPLETE_MARKER).read_text(encoding="utf-8"))
        json.loads((path / ADAPTER_DIR / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def prepare_run_dir(output: str | Path, resume: bool) -> tuple[Path, Path, Path | None]:
    """Check and create a training run folder; returns (folder, checkpoint folder, checkpoint to resume from).

    A finished run or leftover checkpoints are never overwritten silently: they need `resume`. A fresh run starts a
    fresh metrics log and TensorBoard folder (rank 0 only, so DDP ranks do not delete each other's lines).
    """
    out = Path(output)
    if (out / SUMMARY_FILE).is_file() and not resume:
        raise PeftIRError(f"{out} already holds a finished training run; choose another --output or pass --resume")
    ckpt_dir = out / CHECKPOINTS_DIR
    resume_from = last_complete_checkpoint(ckpt_dir) if resume else None
    if not resume and ckpt_dir.is_dir() and any(ckpt_dir.iterdir()):
        raise PeftIRError(f"{ckpt_dir} has checkpoints of an earlier run; pass --resume to continue it")
    out.mkdir(parents=True, exist_ok=True)
    if not resume_from and int(os.environ.get("RANK", "0")) == 0:
        (out / "metrics.jsonl").unlink(missing_ok=True)
        shutil.rmtree(out / TENSORBOARD_DIR, ignore_errors=True)  # an earlier attempt's curves would mix in
    return out, ckpt_dir, resume_from
