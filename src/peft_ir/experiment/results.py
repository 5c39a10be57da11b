"""The report's data: one finished run folder read into a RunResult, and runs grouped by task and method label.

Runs of one label are seeds of one method only when their configs agree on everything but the per-run settings
(seed, name, ...): `tell_apart` gives runs that differ in more (the head, the loss, the steps) labels of their own,
so that a report never averages two recipes as if they were seeds.

Shared by the report's tables (report.py) and its figures (plots.py).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from peft_ir.errors import PeftIRError
from peft_ir.experiment.evaluation import rerank_input_kind
from peft_ir.experiment.rundir import CONFIG, RunDir
from peft_ir.settings import default_of, field_types, optional_inner
from peft_ir.training.checkpoints import SUMMARY_FILE

ZERO_SHOT = "zero-shot"
FIRST_STAGE = "first stage"  # the method of the re-ranking table's baseline row
CONVERGED = 0.95  # steps until the dev metric first reaches this fraction of the run's best
PER_RUN = ("name", "seed", "output", "description", "expect", "expect_tolerance")  # what seeds of one recipe may vary
# A section's dev split seed may vary too: unset it follows the seed, so seed 42 unset and seed 1 with dev_seed 42
# share one split; runs of one row on different splits are noted by the report instead (mixes_dev_sets).
PER_RUN_SECTION = ("dev_seed",)


@dataclass
class RunResult:
    """What the report needs from one run folder."""

    root: Path
    name: str
    seed: int
    task: str                               # retrieval | rerank
    method: str                             # a tuning method, zero-shot, bm25 or run
    label: str                              # method + budget (or sizes): the grouping key within a task
    metrics: dict[str, Any]
    summary: dict[str, Any] | None          # summary.json of the model the run is judged by
    curve: list[dict[str, Any]] = field(default_factory=list)
    reranked: str = ""                      # the run kind a re-ranker re-ranked (its first stage, or fused)
    setup: dict[str, str] = field(default_factory=dict)  # the config but PER_RUN, flattened: dotted key -> JSON

    def final(self, test_set: str) -> dict[str, Any]:
        return self.metrics["sets"][test_set]["runs"][self.metrics["final"]]

    @property
    def dev_seed(self) -> int:
        """The seed of the run's dev split (its training seed unless dev_seed fixed it)."""
        return int((self.summary or {}).get("dev_seed", self.seed))


def load_run(root: str | Path) -> RunResult:
    """Read a finished run folder (config.resolved.yaml, metrics.json, the judged model's summary and curve)."""
    from peft_ir.training.logging import read_metrics  # noqa: PLC0415

    rd = RunDir(root)
    metrics = RunDir.read_json(rd.metrics)
    if not rd.config.is_file() or metrics is None:
        raise PeftIRError(f"{rd.root} is not a finished run folder (needs {CONFIG} and metrics.json; "
                          "run `peft-ir run` on its config to completion)")
    cfg = yaml.safe_load(rd.config.read_text(encoding="utf-8"))
    task, part = ("rerank", "reranker") if cfg.get("reranker") else ("retrieval", "retriever")
    section = cfg.get(part)
    if section is None:
        method, label = cfg["first_stage"], cfg["first_stage"]
    elif section.get("zero_shot"):
        method, label = ZERO_SHOT, ZERO_SHOT
    else:
        method = section["method"]
        sizes = section.get("budget") or ", ".join(f"{k}={v}" for k, v in (section.get("tuning") or {}).items())
        label = f"{method} {sizes}".strip()
    summary = RunDir.read_json(getattr(rd, part) / SUMMARY_FILE)
    curve = read_metrics(getattr(rd, part) / "metrics.jsonl") if summary else []
    return RunResult(rd.root, cfg["name"], int(cfg.get("seed", 0)), task, method, label, metrics, summary, curve,
                     reranked=rerank_input_kind(bool(cfg.get("fuse")), cfg.get("first_stage", "")),
                     setup={k: v for k, v in _flatten({k: v for k, v in cfg.items() if k not in PER_RUN}).items()
                            if k.rpartition(".")[2] not in PER_RUN_SECTION})


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = json.dumps(value, sort_keys=True)
    return out


@functools.cache
def _default(key: str) -> str | None:
    """The JSON of a config setting's default: what a run made before the setting existed did (a new setting's
    default keeps the old behaviour). None where the key names no single setting (a tuning size, a list)."""
    from peft_ir.experiment.config import ExperimentConfig  # noqa: PLC0415

    section, _, name = key.partition(".")
    try:
        top = next(f for f in dataclasses.fields(ExperimentConfig) if f.name == section)
        if not name:
            return None if top.default is dataclasses.MISSING else json.dumps(top.default, sort_keys=True)
        value = default_of(optional_inner(field_types(ExperimentConfig)[section]), name)
    except (StopIteration, TypeError, KeyError):
        return None
    return json.dumps(value, sort_keys=True) if isinstance(value, (str, int, float, bool, type(None))) else None


def _value(setup: dict[str, str], key: str) -> str | None:
    return setup[key] if key in setup else _default(key)


def _agree(a: dict[str, str], b: dict[str, str]) -> bool:
    """Two setups agree on every setting, one a run does not record taking its default (an unknown one agrees)."""
    return all(None in (_value(a, k), _value(b, k)) or _value(a, k) == _value(b, k) for k in a.keys() | b.keys())


def tell_apart(runs: list[RunResult]) -> None:
    """Give runs of one task and label whose setups disagree the settings that differ, appended to their labels
    ("iaa-l 0.5% (reranker.head=cosine)"): each family of agreeing runs is then one group of the report."""
    families: dict[tuple[str, str], list[list[RunResult]]] = {}
    for r in runs:
        same = families.setdefault((r.task, r.label), [])
        family = next((f for f in same if _agree(f[0].setup, r.setup)), None)
        if family is None:
            same.append([r])
        else:
            family.append(r)
    for same in families.values():
        if len(same) < 2:
            continue
        setups = [f[0].setup for f in same]
        keys = sorted({k for s in setups for k in s})
        differing = [k for k in keys if len({_value(s, k) for s in setups}) > 1]
        for family in same:
            shown = ", ".join(f"{k}={_show(_value(family[0].setup, k))}" for k in differing)
            for r in family:
                r.label = f"{r.label} ({shown})"


def _show(value: str | None) -> str:
    if value is None:
        return "unset"
    loaded = json.loads(value)
    return loaded if isinstance(loaded, str) else value


def first_stage_baseline(runs: list[RunResult]) -> RunResult | None:
    """The re-ranking runs' shared input (the same kind, with the same per-query values in every run) as a result
    of its own; None when they re-ranked different runs (a dense first stage trained in each run, say)."""
    kinds = {r.reranked for r in runs}
    if len(kinds) != 1:
        return None
    kind = kinds.pop()

    def scores(r: RunResult) -> dict[str, Any] | None:
        try:
            return {s: {k: body["runs"][kind][k] for k in ("means", "per_query")}
                    for s, body in r.metrics["sets"].items()}
        except KeyError:
            return None

    first = scores(runs[0])
    if first is None or any(scores(r) != first for r in runs[1:]):
        return None
    r0 = runs[0]
    return RunResult(r0.root, kind, r0.seed, r0.task, FIRST_STAGE, f"{kind} ({FIRST_STAGE})",
                     {**r0.metrics, "final": kind}, None)


def steps_to_fraction_of_best(run: RunResult, fraction: float = CONVERGED) -> int | None:
    """The first logged step whose dev metric reaches `fraction` of the run's best dev metric."""
    if not run.summary:
        return None
    key = run.summary.get("dev_metric")
    series = [(r["step"], r[key]) for r in run.curve if key in r]
    if not series:
        return None
    best = max(v for _, v in series)
    return next(step for step, v in series if v >= fraction * best)


@dataclass
class Group:
    """The runs of one method label within one task (several seeds, or one run)."""

    task: str
    label: str
    runs: list[RunResult]

    @property
    def method(self) -> str:
        return self.runs[0].method

    def values(self, test_set: str, measure: str) -> list[float]:
        return [r.final(test_set)["means"][measure] for r in self.runs]

    def per_query(self, test_set: str, measures: list[str]) -> dict[str, dict[str, float]]:
        """Per-query values averaged over the group's runs (seeds)."""
        out = {}
        for m in measures:
            tables = [r.final(test_set)["per_query"][m] for r in self.runs]
            out[m] = {q: statistics.fmean(t[q] for t in tables) for q in tables[0]}
        return out

    def summary_mean(self, key: str) -> float | None:
        values = [r.summary[key] for r in self.runs if r.summary and isinstance(r.summary.get(key), (int, float))]
        return statistics.fmean(values) if values else None

    def kept(self) -> str:
        """Which weights the group's trainings kept: one value when they agree, else each with its count ("starting
        model ×1, best checkpoint ×2"); "" when no summary records it (baselines, runs from before the rule)."""
        kept = [r.summary["kept"] for r in self.runs if r.summary and r.summary.get("kept")]
        if not kept:
            return ""
        counts = {k: kept.count(k) for k in dict.fromkeys(kept)}
        return kept[0] if len(counts) == 1 else ", ".join(f"{k} ×{n}" for k, n in counts.items())

    def mixes_dev_sets(self) -> bool:
        """Whether the group's best-dev mean averages runs selected on different dev splits."""
        return len({r.dev_seed for r in self.runs if r.summary}) > 1

    def convergence(self) -> list[int]:
        """Steps to the converged fraction, per run that logged a dev metric."""
        return [s for s in (steps_to_fraction_of_best(r) for r in self.runs) if s is not None]


def group_runs(runs: list[RunResult]) -> list[Group]:
    groups: dict[tuple[str, str], Group] = {}
    for r in runs:
        groups.setdefault((r.task, r.label), Group(r.task, r.label, [])).runs.append(r)
    return list(groups.values())
