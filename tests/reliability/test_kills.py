"""SIGKILL each long command at a random point: nothing incomplete looks complete, the re-run equals the reference."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from reliability.kills import CASES, KillCase, Timing, Workspace, inject, make_workspace, run_reference


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> tuple[Workspace, dict[str, Timing]]:
    ws = make_workspace(tmp_path_factory.mktemp("kills"))
    return ws, {case.name: run_reference(case, ws) for case in CASES}  # in order: later commands read earlier ones


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_sigkill_then_rerun(case: KillCase, workspace: tuple[Workspace, dict[str, Timing]]) -> None:
    ws, timings = workspace
    result = inject(case, ws, timings[case.name], random.Random(case.name))
    assert result.incomplete == [], f"complete-looking but partial after the kill: {result.incomplete}"
    assert result.identical, result.detail
    assert result.leftovers == []


def test_the_checker_spots_a_truncated_output(workspace: tuple[Workspace, dict[str, Timing]], tmp_path: Path) -> None:
    """Guards the guard: a run cut short, a torn adapter and a half index are all reported."""
    from reliability.kills import incomplete_outputs

    ws, _ = workspace
    run = ws.reference["search"]
    cut = tmp_path / "out.trec"
    cut.write_bytes(run.read_bytes()[: len(run.read_bytes()) // 2])
    assert incomplete_outputs(cut, run) == [str(cut)]
    adapter_run = ws.reference["train reranker"]
    torn = tmp_path / "train"
    (torn / "adapter").mkdir(parents=True)
    for f in (adapter_run / "adapter").iterdir():
        (torn / "adapter" / f.name).write_bytes(f.read_bytes()[: 40])
    assert "adapter/tuning_config.json" in incomplete_outputs(torn, adapter_run)
    index = ws.reference["index"]
    half = tmp_path / "index"
    half.mkdir()
    for f in index.iterdir():
        half.joinpath(f.name).write_bytes(f.read_bytes()[: max(1, f.stat().st_size // 2)])
    assert incomplete_outputs(half, index)


def test_a_poisoned_checkpoint_is_refused_and_its_payload_never_runs(
        workspace: tuple[Workspace, dict[str, Timing]]) -> None:
    from reliability.kills import planted_pickle

    ws, _ = workspace
    refused, ran, err = planted_pickle(ws)
    assert refused and not ran
    assert "refused to load a checkpoint file holding more than weights" in err and "posix.system" in err
