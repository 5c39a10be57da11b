"""Fixtures for the experiment tests: one finished tiny experiment shared by a module's tests."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/experiment/tiny.py

from tiny import tiny_config, write_yaml  # noqa: E402


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, synthetic_beir: Path, tiny_bert_dir: Path) -> dict[str, Any]:
    """One finished tiny experiment: its config file, run folder, metrics and printed progress lines."""
    from peft_ir.experiment import load_config
    from peft_ir.experiment.pipeline import Pipeline

    tmp = tmp_path_factory.mktemp("experiment")
    path = write_yaml(tmp / "tiny.yaml", tiny_config(synthetic_beir, tiny_bert_dir, tmp / "runs"))
    lines: list[str] = []
    pipeline = Pipeline(load_config(path), progress=False, echo=lines.append)
    metrics = pipeline.run()
    return {"config": path, "root": pipeline.dir.root, "metrics": metrics, "lines": lines, "tmp": tmp}
