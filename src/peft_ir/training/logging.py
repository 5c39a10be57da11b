"""Metrics as jsonl (one line per log event, appended and flushed), a progress bar a person can read, and a
loss/metric curve PNG.

The Trainer's raw log events (loss, learning rate, dev metric dicts) go to metrics.jsonl and to the `peft_ir.metrics`
logger, which writes only where a handler is attached (log.txt under `peft-ir run`), never to the console; the
console shows one bar per training with the latest loss and dev metric in its postfix."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from transformers import PrinterCallback, ProgressCallback, TrainerCallback

from peft_ir.atomic import atomic_path


METRICS_LOG = logging.getLogger("peft_ir.metrics")
METRICS_LOG.propagate = False  # not to the console's handlers: only to the ones attached to it (log.txt)
METRICS_LOG.setLevel(logging.INFO)


class JsonlMetrics(TrainerCallback):
    """Append every Trainer log event (loss, learning rate, dev metric) to `metrics.jsonl`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_log(self, args, state, control, logs: dict[str, Any] | None = None, **kwargs):  # type: ignore[no-untyped-def]
        if not state.is_world_process_zero or not logs:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            line = json.dumps({"step": state.global_step, "epoch": state.epoch, **logs})
            fh.write(line + "\n")
            fh.flush()
        METRICS_LOG.info(line)


class StageProgress(ProgressCallback):
    """The Trainer's progress bar with the latest loss and dev metric as its postfix, instead of a dict written
    under the bar at every log event."""

    def __init__(self, metric: str | None):
        super().__init__()
        self.metric = metric
        self.postfix: dict[str, str] = {}

    def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[no-untyped-def]
        if not state.is_world_process_zero or not logs:
            return
        if "loss" in logs:
            self.postfix["loss"] = f"{logs['loss']:.4g}"
        if self.metric and self.metric in logs:
            self.postfix["dev"] = f"{logs[self.metric]:.4f}"
        if getattr(self, "training_bar", None) is not None and self.postfix:
            self.training_bar.set_postfix(self.postfix, refresh=False)


def readable_console(trainer: Any, metric: str | None) -> None:
    """Replace the Trainer's console output (a bar that writes each log dict, or a print per event without bars)
    with StageProgress, or with nothing when progress bars are off."""
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if not trainer.args.disable_tqdm:
        trainer.add_callback(StageProgress(metric))


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_curves(metrics_path: str | Path, out_png: str | Path, metric_key: str, title: str = "") -> None:
    """Training loss and the dev metric against steps, side by side."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rows = read_metrics(metrics_path)
    loss = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    dev = [(r["step"], r[metric_key]) for r in rows if metric_key in r]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, series, label in ((axes[0], loss, "training loss"), (axes[1], dev, metric_key)):
        if series:
            xs, ys = zip(*series)
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
