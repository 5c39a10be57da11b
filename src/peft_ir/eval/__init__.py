"""Evaluation with ir-measures: default measure sets, per-query values, significance, tables."""

from peft_ir.eval.compare import Comparison, compare, holm
from peft_ir.eval.evaluate import aggregate, drop_self_hits, evaluate, per_query
from peft_ir.eval.measures import PRESETS, default_measures, guess_preset, parse_measures
from peft_ir.eval.report import comparison_table, metrics_table

__all__ = [
    "PRESETS", "Comparison", "aggregate", "compare", "comparison_table", "default_measures", "drop_self_hits",
    "evaluate", "guess_preset", "holm", "metrics_table", "parse_measures", "per_query",
]
