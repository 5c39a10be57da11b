"""Helpers for the experiment tests: a tiny experiment config over the synthetic BEIR folder and a tiny BERT, and
the files of a run folder with their mtimes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from peft_ir.experiment.rundir import LOCK


def tiny_config(beir: Path, model: Path, output: Path, **sections: Any) -> dict[str, Any]:
    """A retriever + reranker experiment that trains a few steps of each (seconds on one CPU thread)."""
    cfg: dict[str, Any] = {
        "name": "tiny",
        "seed": 7,
        "output": str(output),
        "data": {"beir": str(beir)},
        "retriever": {"model": str(model), "normalize": True, "method": "iaa-l", "tuning": {"r": 4, "ar": 4},
                      "num_negatives": 0, "query_max_length": 16, "passage_max_length": 32, "batch_size": 8,
                      "max_steps": 4, "eval_steps": 2, "save_steps": 2, "logging_steps": 1, "dev_queries": 8,
                      "dev_corpus": 40, "lr": "5e-3"},
        "encode": {"batch_size": 32, "max_length": 32, "chunk_size": 25},
        "search": {"hits": 20},
        "reranker": {"model": str(model), "method": "iaa-l", "tuning": {"r": 4, "ar": 4}, "negatives": "first_stage",
                     "negatives_window": [1, 20], "negatives_pool": 8, "group_size": 4, "batch_size": 8,
                     "max_steps": 4, "eval_steps": 2, "save_steps": 2, "logging_steps": 1, "dev_queries": 8,
                     "dev_candidates": 8, "query_max_length": 8, "passage_max_length": 24, "hits": 10,
                     "lr": 1e-2},
        "eval": {"measures": ["nDCG@10", "R@20"]},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def stamps(root: Path) -> dict[str, int]:
    """Every file under a run folder with its mtime, except the append-only log and the lock (a run that rewrites
    nothing leaves this unchanged)."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()
            and p.name not in ("log.txt", LOCK)}


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path
