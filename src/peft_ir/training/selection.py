"""Model selection that never ships a worse model.

The best dev checkpoint (or, when no evaluation came after step 0, the last step) replaces the starting model only
when it beats it on the dev queries: by a one-sided paired t-test over the per-query values (scipy's ttest_rel,
`selection_alpha`), or, when a user prefers, by a margin of the means (`selection_margin`). Otherwise the starting
model's trainable weights are restored and that is what is saved.

The starting point lives in `<output>/start/`: its trainable weights (`adapter/`, as `save_tuned` writes every
checkpoint) and its per-query dev values (`dev_per_query.json`), written before the first step, so that a resumed run
reaches the decision the uninterrupted one would. The weights go to disk, not to a copy in memory: for PEFT methods
a few MB; under full fine-tuning one more model-sized file beside the two checkpoints the run keeps, and no second
copy of the model in host or GPU memory (save_tuned passes the weights through host memory once, as every
checkpoint does).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peft_ir.atomic import atomic_open
from peft_ir.errors import PeftIRError

if TYPE_CHECKING:  # the CLI reads `describe` for its closing line without loading torch
    from torch import nn

START_DIR = "start"
START_SCORES = "dev_per_query.json"

KEPT_START = "starting model"
KEPT_BEST = "best checkpoint"
KEPT_LAST = "last step"
# The summary's selection fields of a training without dev queries: the last step, nothing weighed.
NO_DEV_SELECTION: dict[str, Any] = {
    "selection": "last step (no dev queries)", "kept": KEPT_LAST, "selection_candidate": None, "selection_rule": None,
    "start_dev": None, "candidate_dev": None, "selection_p": None, "final_dev": None}


@dataclass(frozen=True)
class Selection:
    """Which weights a training keeps, and the evidence: both dev means over the same queries and the p-value."""

    kept: str            # KEPT_START, or the candidate (KEPT_BEST, KEPT_LAST)
    candidate: str       # what was weighed against the start (KEPT_BEST or KEPT_LAST)
    rule: str            # "one-sided paired t-test, alpha 0.05" or "margin 0.01"
    start_dev: float
    candidate_dev: float
    p_value: float       # one-sided: the candidate better than the start
    queries: int

    @property
    def start_kept(self) -> bool:
        return self.kept == KEPT_START

    def summary(self) -> dict[str, Any]:
        """What summary.json records of the decision."""
        return {"kept": self.kept, "selection_candidate": self.candidate, "selection_rule": self.rule,
                "start_dev": self.start_dev, "candidate_dev": self.candidate_dev, "selection_p": self.p_value,
                "final_dev": self.start_dev if self.start_kept else self.candidate_dev}


def paired_p(start: dict[str, float], candidate: dict[str, float]) -> float:
    """One-sided p-value of "the candidate is better than the start" by a paired t-test over the same queries.

    Equal differences everywhere have no variance for the test: 0.0 when they are all gains, else 1.0.
    """
    from peft_ir.eval.compare import paired_t_p  # noqa: PLC0415  (late: scipy only when a selection is made)

    if set(start) != set(candidate) or not start:
        raise PeftIRError(f"model selection compares the same dev queries: the start has {len(start)}, the "
                          f"candidate {len(candidate)}, {len(set(start) ^ set(candidate))} not shared")
    qids = sorted(start)
    a, b = [candidate[q] for q in qids], [start[q] for q in qids]
    diffs = {x - y for x, y in zip(a, b)}
    if len(diffs) == 1:
        return 0.0 if diffs.pop() > 0 else 1.0
    return paired_t_p(a, b, alternative="greater")


def decide(start: dict[str, float], candidate: dict[str, float], *, alpha: float = 0.05,
           margin: float | None = None, candidate_name: str = KEPT_BEST) -> Selection:
    """Keep the candidate only when it beats the start: p < alpha, or (with `margin`) a mean gain above the margin."""
    p = paired_p(start, candidate)
    start_dev = sum(start.values()) / len(start)
    candidate_dev = sum(candidate.values()) / len(candidate)
    if margin is None:
        better, rule = p < alpha, f"one-sided paired t-test, alpha {alpha:g}"
    else:
        better, rule = candidate_dev - start_dev > margin, f"margin {margin:g}"
    return Selection(candidate_name if better else KEPT_START, candidate_name, rule, start_dev, candidate_dev, p,
                     len(start))


def save_start(out: Path, tuned: nn.Module, base_name: str | None, per_query: dict[str, float]) -> None:
    """Record the starting point: its trainable weights, then (last, as the mark that both are complete) its
    per-query dev values."""
    from peft_ir.tuning import save_tuned  # noqa: PLC0415
    from peft_ir.tuning.checkpoint import ADAPTER_DIR  # noqa: PLC0415

    save_tuned(tuned, out / START_DIR / ADAPTER_DIR, base_name)
    with atomic_open(out / START_DIR / START_SCORES) as fh:
        json.dump({"per_query": per_query}, fh, indent=1)


def read_start(out: Path) -> dict[str, float] | None:
    """The starting model's per-query dev values recorded in `out`; None when no complete record is there."""
    from peft_ir.tuning.checkpoint import ADAPTER_DIR, CONFIG_FILE  # noqa: PLC0415

    path = out / START_DIR / START_SCORES
    if not path.is_file() or not (out / START_DIR / ADAPTER_DIR / CONFIG_FILE).is_file():
        return None
    try:
        values = json.loads(path.read_text(encoding="utf-8"))["per_query"]
    except (ValueError, KeyError, TypeError) as exc:
        raise PeftIRError(f"{path}: unreadable starting-model dev values ({exc}); delete {out / START_DIR} to "
                          "re-evaluate the starting model") from None
    return {str(q): float(v) for q, v in values.items()}


def restore_start(out: Path, tuned: nn.Module) -> None:
    """Put the starting model's trainable weights back into `tuned`."""
    from peft_ir.tuning import load_trainable  # noqa: PLC0415
    from peft_ir.tuning.checkpoint import ADAPTER_DIR  # noqa: PLC0415

    load_trainable(tuned, out / START_DIR / ADAPTER_DIR)


def describe(summary: dict[str, Any]) -> str:
    """How a training run chose its weights, in words (the closing line of `peft-ir train`, `peft-ir run`'s log)."""
    if summary.get("dev_metric") is None:
        return "no dev queries: the last step's weights"
    metric = str(summary["dev_metric"]).removeprefix("eval_").replace("_", " ")
    if summary.get("kept") is None:  # a summary written before the selection rule
        return f"best {summary['dev_metric']} {summary['best_dev']:.4f}"
    start, cand, p = summary["start_dev"], summary["candidate_dev"], summary["selection_p"]
    rule = summary.get("selection_rule") or ""
    evidence = f"{metric} {cand:.4f} vs the start's {start:.4f}, p = {p:.3g}; rule: {rule}"
    if summary["kept"] == KEPT_START:
        candidate = summary.get("selection_candidate") or KEPT_BEST
        return f"kept the starting model (the training's {candidate} did not beat it: {evidence})"
    return f"kept the {summary['kept']} ({evidence})"
