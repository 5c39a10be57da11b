"""`peft-ir annotate` killed with SIGKILL resumes after the blocks it wrote and ends with the reference's bytes.

The same command is a case of the SIGKILL harness (reliability/kills.py), which kills it at random points."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from reliability.kills import CASES, Workspace, _command, _env, make_workspace, run_reference

CASE = next(c for c in CASES if c.name == "annotate")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> Workspace:
    return make_workspace(tmp_path_factory.mktemp("annotate-kill"))


def test_killed_after_some_blocks_resumes_after_them(workspace: Workspace, tmp_path: Path) -> None:
    from peft_ir.teacher.annotate import BLOCK_QUERIES, partial_paths

    run_reference(CASE, workspace)
    reference = workspace.reference[CASE.name]
    out = tmp_path / "out.jsonl"
    partial, meta = partial_paths(out)
    proc = subprocess.Popen(_command(CASE.args(workspace, out)), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (partial.is_file() and partial.read_bytes().count(b"\n") >= BLOCK_QUERIES):
        assert proc.poll() is None and time.time() < deadline, "annotate ended before it could be killed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists() and meta.is_file()  # nothing under the final name until complete
    done = subprocess.run(_command(CASE.args(workspace, out)), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = int(done.stdout.split("resumed after ")[1].split(")")[0])
    assert resumed >= BLOCK_QUERIES and resumed % BLOCK_QUERIES == 0
    assert out.read_bytes() == reference.read_bytes()
    assert not partial.exists() and not meta.exists()
