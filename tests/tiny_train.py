"""Tiny training configs shared by the tests (tiny BERT, synthetic BEIR: seconds on one CPU thread)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peft_ir.reranker.config import CrossEncoderSpec, RerankerTrainConfig
from peft_ir.retriever.config import EncoderSpec, RetrieverTrainConfig
from peft_ir.tuning import TuningConfig


def retriever_config(data: Path, model: Path, out: Path, **kw: Any) -> RetrieverTrainConfig:
    base: dict[str, Any] = dict(
        train=str(data), output=str(out),
        encoder=EncoderSpec(model=str(model), normalize=True, passage_max_length=32, query_max_length=16),
        tuning=TuningConfig(method="iaa-l", r=4, ar=4), batch_size=8, num_negatives=0, max_steps=12, eval_steps=6,
        save_steps=6, logging_steps=2, dev_queries=8, dev_corpus=40, lr=5e-3, progress=False)
    return RetrieverTrainConfig(**(base | kw))


def reranker_config(data: Path, run: Path, model: Path, out: Path, **kw: Any) -> RerankerTrainConfig:
    """Groups of 4 from the first 20 hits of `run`, queries cut at 8 tokens and passages at 24."""
    base: dict[str, Any] = dict(
        train=str(data), output=str(out), negatives_run=str(run), negatives_window=(1, 20), negatives_pool=10,
        cross_encoder=CrossEncoderSpec(model=str(model), query_max_length=8, passage_max_length=24),
        tuning=TuningConfig(method="iaa-l", r=4, ar=4), group_size=4, batch_size=8, max_steps=12, eval_steps=4,
        save_steps=4, logging_steps=1, dev_queries=8, dev_candidates=8, lr=1e-2, warmup_ratio=0.0, progress=False)
    return RerankerTrainConfig(**(base | kw))
