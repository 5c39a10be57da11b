"""Render metric tables as markdown, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json

from peft_ir.eval.compare import Comparison


def metrics_table(rows: dict[str, dict[str, float]], fmt: str = "markdown", digits: int = 4) -> str:
    """rows: name -> measure -> value."""
    measures = list(next(iter(rows.values())))
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["run", *measures])
        for name, vals in rows.items():
            w.writerow([name, *(f"{vals[m]:.{digits}f}" for m in measures)])
        return buf.getvalue()
    lines = ["| run | " + " | ".join(measures) + " |", "|---|" + "---:|" * len(measures)]
    for name, vals in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{vals[m]:.{digits}f}" for m in measures) + " |")
    return "\n".join(lines) + "\n"


def comparison_table(c: Comparison, fmt: str = "markdown", digits: int = 4) -> str:
    """One row per run; `†` marks a Holm-corrected paired t-test p < alpha against the first run."""
    if fmt == "json":
        return json.dumps({"baseline": c.names[0], "alpha": c.alpha, "test": "paired t-test, Holm-corrected",
                           "means": c.means, "p_values": c.p_values}, indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["run", *(x for m in c.measures for x in (m, f"p({m})"))])
        for name in c.names:
            row = [name]
            for m in c.measures:
                p = c.p_values.get(name, {}).get(m)
                row += [f"{c.means[name][m]:.{digits}f}", "" if p is None else f"{p:.4g}"]
            w.writerow(row)
        return buf.getvalue()
    lines = ["| run | " + " | ".join(c.measures) + " |", "|---|" + "---:|" * len(c.measures)]
    for i, name in enumerate(c.names):
        cells = []
        for m in c.measures:
            mark = "†" if c.significant(name, m) else ""
            cells.append(f"{c.means[name][m]:.{digits}f}{mark}")
        label = f"{name} (baseline)" if i == 0 else name
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"† paired t-test against {c.names[0]}, Holm-corrected across {len(c.names) - 1} runs, p < {c.alpha}")
    return "\n".join(lines) + "\n"
