"""The report's figures (matplotlib, Agg backend): learning curves and effectiveness against trainable share."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING

from peft_ir.atomic import atomic_path

if TYPE_CHECKING:
    from peft_ir.experiment.results import Group, RunResult


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def _save(fig, path: Path) -> None:  # type: ignore[no-untyped-def]
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")


SEED_LINESTYLES = ("-", "--", ":", "-.")


def run_styles(runs: list[RunResult]) -> list[tuple[str, str]]:
    """(colour, line style) for each run: one colour per method and one line style per seed within it, so that a
    method's seeds read as one family and two methods share a colour only beyond twenty methods."""
    plt = _pyplot()
    from matplotlib.colors import to_hex  # noqa: PLC0415

    method_index = {key: i for i, key in enumerate(dict.fromkeys((r.task, r.label) for r in runs))}
    cmap = plt.get_cmap("tab10" if len(method_index) <= 10 else "tab20")
    seen: dict[tuple[str, str], int] = {}
    styles = []
    for r in runs:
        key = (r.task, r.label)
        nth = seen[key] = seen.get(key, -1) + 1
        styles.append((to_hex(cmap(method_index[key] % cmap.N)), SEED_LINESTYLES[nth % len(SEED_LINESTYLES)]))
    return styles


def plot_learning_curves(runs: list[RunResult], out_png: Path) -> bool:
    """Dev metric and training loss against steps, one line per trained run; False when no run has a curve."""
    trained = [r for r in runs if r.summary and r.curve]
    if not trained:
        return False
    plt = _pyplot()
    fig, (dev_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4))
    tasks = {r.task for r in trained}
    for r, (colour, linestyle) in zip(trained, run_styles(trained)):
        key = r.summary["dev_metric"]  # type: ignore[index]
        label = f"{r.label}{f' [{r.task}]' if len(tasks) > 1 else ''} (seed {r.seed})"
        dev = [(row["step"], row[key]) for row in r.curve if key in row]
        loss = [(row["step"], row["loss"]) for row in r.curve if "loss" in row]
        for ax, series in ((dev_ax, dev), (loss_ax, loss)):
            if series:
                xs, ys = zip(*series)
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=label, color=colour,
                        linestyle=linestyle)
    dev_ax.set_ylabel(", ".join(sorted({r.summary["dev_metric"].removeprefix("eval_")  # type: ignore[index]
                                        for r in trained})))
    loss_ax.set_ylabel("training loss")
    for ax in (dev_ax, loss_ax):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    # beside the axes, not over the curves: a grid of methods and seeds has too many lines to leave room inside
    entries: dict[str, object] = {}
    for ax in (dev_ax, loss_ax):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    fig.tight_layout()
    fig.legend(list(entries.values()), list(entries), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7,
               frameon=False)
    _save(fig, out_png)
    plt.close(fig)
    return True


def plot_share_vs_effectiveness(groups: list[Group], column: tuple[str, str], out_png: Path) -> None:
    """One point per method (mean, with the std over seeds as error bar) at its trainable share (log scale);
    untrained baselines (no share) are drawn as horizontal lines."""
    plt = _pyplot()
    test_set, measure = column
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for g in groups:
        values = g.values(test_set, measure)
        mean = statistics.fmean(values)
        share = g.summary_mean("method_share") or g.summary_mean("share")
        if not share:
            ax.axhline(mean, linestyle="--", linewidth=1, color="grey")
            ax.annotate(g.label, (0, mean), xycoords=("axes fraction", "data"), fontsize=7, va="bottom")
            continue
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        ax.errorbar([share * 100], [mean], yerr=[std], fmt="o", capsize=3)
        ax.annotate(g.label, (share * 100, mean), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("method's trainable parameters, % of the base model (log scale)")
    ax.set_ylabel(f"{test_set} {measure}")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    _save(fig, out_png)
    plt.close(fig)
