"""Metrics as jsonl (one line per log event, appended and flushed) and a loss/metric curve PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from peft_ir.atomic import atomic_path


class JsonlMetrics(TrainerCallback):
    """Append every Trainer log event (loss, learning rate, dev metric) to `metrics.jsonl`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_log(self, args, state, control, logs: dict[str, Any] | None = None, **kwargs):  # type: ignore[no-untyped-def]
        if not state.is_world_process_zero or not logs:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **logs}) + "\n")
            fh.flush()


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
