"""Checkpoints that hold only the trainable weights, and resuming from the last *complete* one."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

_CKPT = re.compile(r"^checkpoint-(\d+)$")
COMPLETE_MARKER = "trainer_state.json"  # the Trainer writes it last


def last_complete_checkpoint(folder: str | Path) -> Path | None:
    """The highest-step checkpoint whose trainer state was written; half-written ones are removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = sorted(((int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _CKPT.match(p.name))),
                   reverse=True)
    for _, path in found:
        if (path / COMPLETE_MARKER).is_file():
            return path
        log.warning("removing incomplete checkpoint %s (interrupted while saving)", path)
        shutil.rmtree(path, ignore_errors=True)
    return None
