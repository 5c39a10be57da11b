"""Measures as ir-measures values, and the default set for each kind of collection."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import ir_measures
from ir_measures import Measure

from peft_ir.errors import PeftIRError

PRESETS: dict[str, tuple[str, ...]] = {
    "beir": ("nDCG@10", "R@100", "R@1000"),
    "trec-dl": ("nDCG@10", "RR(rel=2)@10", "R(rel=2)@1000", "AP(rel=2)"),
    "msmarco": ("RR@10", "R@1000"),
}


def parse_measures(names: Iterable[str | Measure]) -> list[Measure]:
    out = []
    for name in names:
        if isinstance(name, Measure):
            out.append(name)
            continue
        try:
            out.append(ir_measures.parse_measure(name))
        except Exception as exc:  # ir_measures raises ValueError/NameError/SyntaxError on bad names
            raise PeftIRError(f"unknown measure {name!r} ({exc}); examples: nDCG@10, RR(rel=2)@10, R@1000, AP(rel=2)") from None
    return out


def guess_preset(qrels: dict[str, dict[str, int]]) -> str:
    """Graded qrels (a grade >= 2) are TREC DL style; binary qrels with thousands of queries are MS MARCO dev; else BEIR."""
    max_grade = max((g for docs in qrels.values() for g in docs.values()), default=0)
    if max_grade >= 2:
        return "trec-dl"
    if len(qrels) >= 5000:
        return "msmarco"
    return "beir"


def default_measures(qrels: dict[str, dict[str, int]], preset: str | None = None) -> list[Measure]:
    preset = preset or guess_preset(qrels)
    if preset not in PRESETS:
        raise PeftIRError(f"unknown measure preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return parse_measures(PRESETS[preset])


def measure_names(measures: Sequence[Measure]) -> list[str]:
    return [str(m) for m in measures]
