"""Checkpoints that hold only the trainable weights, and resuming from the last *complete* one."""

from __future__ import annotations

import json
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
        if _complete(path):
            return path
        log.warning("removing incomplete checkpoint %s (interrupted while saving)", path)
        shutil.rmtree(path, ignore_errors=True)
    return None


def _complete(path: Path) -> bool:
    """The Trainer writes its state last and not atomically: it must exist and parse, as must our adapter config."""
    try:
        json.loads((path / COMPLETE_MARKER).read_text(encoding="utf-8"))
        json.loads((path / "adapter" / "tuning_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True
