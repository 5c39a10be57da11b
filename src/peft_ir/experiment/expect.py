"""Expected results that travel with their config, as Anserini's regression files do.

A config's `expect: {TEST_SET: {RUN_KIND: {MEASURE: VALUE}}}` names numbers the experiment must reproduce; run kinds
are those of the run folder's runs/ (dense, bm25, run, fused, reranked). `peft-ir run` evaluates every expected
measure (besides the collection's own) and, after the evaluate stage, compares: a value further than
`expect_tolerance` from the expected one fails the run, naming the measure, the expected value and the one got.
`peft-ir run --check-expected RUN_DIR` re-checks a finished run from its metrics.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peft_ir.errors import PeftIRError
from peft_ir.experiment.config import RERANKED, RERANKED_FUSED, ExperimentConfig
from peft_ir.experiment.schema import Origins, fail


@dataclass(frozen=True)
class Check:
    test_set: str
    kind: str
    measure: str
    expected: float
    got: float | None

    def ok(self, tolerance: float) -> bool:
        return self.got is not None and abs(self.got - self.expected) <= tolerance

    def line(self) -> str:
        got = "not evaluated" if self.got is None else f"{self.got:.4f}"
        return f"{self.test_set}/{self.kind} {self.measure}: expected {self.expected:.4f}, got {got}"


def produced_kinds(cfg: ExperimentConfig) -> list[str]:
    """Every run kind the experiment evaluates."""
    fused_rerank = cfg.reranker is not None and cfg.reranker.fuse_weight is not None
    return (cfg.run_kinds() + (["fused"] if cfg.fuse else []) + ([RERANKED] if cfg.reranker else [])
            + ([RERANKED_FUSED] if fused_rerank else []))


def validate_expect(cfg: ExperimentConfig, origins: Origins) -> None:
    """Every expected number names a test set, a run kind this config produces and a measure ir-measures knows."""
    from peft_ir.eval import parse_measures  # noqa: PLC0415

    names = [t.name for t in cfg.data.test]
    kinds = produced_kinds(cfg)
    if not 0 <= cfg.expect_tolerance < 1:
        raise fail("expect_tolerance", origins, f"must be at least 0 and below 1, got {cfg.expect_tolerance}")
    for name, runs in cfg.expect.items():
        if name not in names:
            raise fail(f"expect.{name}", origins, f"no test set is named {name!r} (test sets: {', '.join(names)})")
        for kind, values in runs.items():
            if kind not in kinds:
                raise fail(f"expect.{name}.{kind}", origins, f"this config produces no {kind!r} run "
                           f"(it produces: {', '.join(kinds)})")
            for measure in values:
                try:
                    parse_measures([measure])
                except PeftIRError as exc:
                    raise fail(f"expect.{name}.{kind}.{measure}", origins, str(exc)) from None


def expected_measures(cfg: ExperimentConfig, test_set: str) -> list[str]:
    """The measures `expect` names for one test set (evaluated whatever the collection's defaults are)."""
    return sorted({m for values in cfg.expect.get(test_set, {}).values() for m in values})


def compare(expect: dict[str, dict[str, dict[str, float]]], metrics: dict[str, Any]) -> list[Check]:
    """One Check per expected number, with the value metrics.json holds (None where it holds none)."""
    from peft_ir.eval import parse_measures  # noqa: PLC0415

    checks = []
    for name, runs in expect.items():
        for kind, values in runs.items():
            means = metrics.get("sets", {}).get(name, {}).get("runs", {}).get(kind, {}).get("means", {})
            for measure, expected in values.items():
                got = means.get(str(parse_measures([measure])[0]))
                checks.append(Check(name, kind, measure, float(expected), None if got is None else float(got)))
    return checks


def check_expected(cfg: ExperimentConfig, metrics: dict[str, Any]) -> list[Check]:
    """The checks of `cfg.expect` against `metrics`; raises PeftIRError listing every miss."""
    checks = compare(cfg.expect, metrics)
    misses = [c for c in checks if not c.ok(cfg.expect_tolerance)]
    if misses:
        raise PeftIRError(f"{len(misses)} of {len(checks)} expected result(s) missed (tolerance "
                          f"{cfg.expect_tolerance:g}): " + "; ".join(c.line() for c in misses))
    return checks
