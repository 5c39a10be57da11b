"""A tiny retriever training config shared by the tests (tiny BERT, synthetic BEIR: seconds on one CPU thread)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peft_ir.retriever.config import EncoderSpec, RetrieverTrainConfig
from peft_ir.tuning import TuningConfig


def retriever_config(data: Path, model: Path, out: Path, **kw: Any) -> RetrieverTrainConfig:
    base: dict[str, Any] = dict(
        train=str(data), output=str(out),
        encoder=EncoderSpec(model=str(model), normalize=True, passage_max_length=32, query_max_length=16),
        tuning=TuningConfig(method="iaa-l", r=4, ar=4), batch_size=8, num_negatives=0, max_steps=12, eval_steps=6,
        save_steps=6, logging_steps=2, dev_queries=8, dev_corpus=40, lr=5e-3, progress=False)
    return RetrieverTrainConfig(**(base | kw))
