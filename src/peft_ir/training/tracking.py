"""Experiment trackers (`report_to`): which ones the Hugging Face Trainer logs to, and where each writes locally.

Only tensorboard is an extra of peft-ir (`pip install peft-ir[test]` brings it); wandb and mlflow are accepted but
left to the user to install, so a missing package is refused up front, before any data or model is loaded.
Light on purpose: the config modules import it to type `report_to` without loading transformers.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any, Literal

Tracker = Literal["tensorboard", "wandb", "mlflow", "none"]
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}  # tracker -> its pip package
TENSORBOARD_DIR = "tensorboard"  # inside the training run folder
# The variable that moves each other tracker's local files (wandb's offline run and cache, mlflow's file store, both
# written under the working directory by default) and the run folder's subfolder it is pointed at.
LOCAL_FILES = {"wandb": ("WANDB_DIR", "wandb"), "mlflow": ("MLFLOW_TRACKING_URI", "mlruns")}
_pointed: dict[str, str] = {}  # variable -> the value this module set (a later training moves it; a user's is kept)

log = logging.getLogger(__name__)


def trackers(report_to: list[str]) -> list[str]:
    """The trackers to hand the Trainer: `none` (or nothing) means none."""
    return [t for t in report_to if t != "none"]


def tracking_problem(report_to: list[str]) -> str | None:
    """Why `report_to` cannot be used here (see the two checks below), or None."""
    return contradiction(report_to) or missing_package(report_to)


def contradiction(report_to: list[str]) -> str | None:
    """`none` beside a tracker: a config that says two things."""
    if "none" in report_to and trackers(report_to):
        return f"'none' turns tracking off and cannot be combined with {', '.join(trackers(report_to))}"
    return None


def missing_package(report_to: list[str]) -> str | None:
    """The first tracker whose package is not installed, with the command that installs it."""
    for tracker in trackers(report_to):
        package = PACKAGES[tracker]
        if importlib.util.find_spec(package) is None:
            return f"reporting to {tracker} needs the {package} package, which is not installed: pip install {package}"
    return None


def point_tensorboard(trainer: Any, run_dir: Path) -> None:
    """Point the Trainer's TensorBoard callback at `<run_dir>/tensorboard`.

    Left alone, transformers writes under `<output_dir>/runs/<date>_<host>`, and our output_dir is checkpoints/; a
    fixed folder in the run folder is where a person looks, and a resumed run appends to it. It must be set before
    the zero-step evaluation: a log event before training begins would open a writer in the working directory's
    runs/. A folder given by TENSORBOARD_LOGGING_DIR is kept.
    """
    from transformers.integrations import TensorBoardCallback  # noqa: PLC0415

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback) and callback.logging_dir is None:
            callback.logging_dir = str(run_dir / TENSORBOARD_DIR)


def point_local_files(report_to: list[str], run_dir: Path) -> None:
    """Point wandb's and mlflow's local files at `<run_dir>/wandb` and `<run_dir>/mlruns`, as TensorBoard's are,
    instead of the working directory. Done through their variables, before the Trainer's callbacks read them at the
    start of training; a value the user set is kept (a remote MLFLOW_TRACKING_URI, say)."""
    for tracker in trackers(report_to):
        if tracker not in LOCAL_FILES:
            continue
        var, sub = LOCAL_FILES[tracker]
        current = os.environ.get(var)
        if current is not None and _pointed.get(var) != current:
            log.info("%s: %s=%s (set by the user) is kept", tracker, var, current)
            continue
        folder = run_dir / sub
        folder.mkdir(parents=True, exist_ok=True)
        value = str(folder) if tracker == "wandb" else folder.resolve().as_uri()
        os.environ[var] = _pointed[var] = value
        log.info("%s writes its local files to %s", tracker, folder)
