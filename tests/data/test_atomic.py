"""Atomic writes: a failed block leaves nothing; temporaries of dead writers are swept, live writers' are kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from peft_ir.atomic import atomic_open


def test_failed_write_leaves_no_file(tmp_path: Path) -> None:
    target = tmp_path / "run.trec"
    with pytest.raises(RuntimeError), atomic_open(target) as fh:
        fh.write("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_temporaries_of_dead_writers_are_swept(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # this process has exited: its temporary is debris of a kill
    target = tmp_path / "summary.json"
    (tmp_path / f".summary.json.tmp-{dead_pid}").write_text("{")
    (tmp_path / f".summary.json.tmp-{os.getppid()}").write_text("{")  # a live writer (our parent): kept
    with atomic_open(target) as fh:
        fh.write("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f".summary.json.tmp-{os.getppid()}", "summary.json"])
