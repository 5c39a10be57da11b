"""The Trainer arguments every peft-ir training shares (schedule, evaluation, checkpoints, seeds)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def common_trainer_args(cfg: Any, output_dir: Path, metric: str) -> dict[str, Any]:
    """Keyword arguments for (SentenceTransformer)TrainingArguments from a retriever or reranker config.

    Keeps the best dev checkpoint (`metric`, higher is better) and at most two checkpoints on disk.
    """
    cuda = torch.cuda.is_available()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return dict(
        output_dir=str(output_dir),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate(),
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a ratio of the total steps (transformers 5)
        lr_scheduler_type="linear",
        eval_strategy="steps",
        eval_steps=cfg.eval_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        greater_is_better=True,
        logging_steps=cfg.logging_steps,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to=[],
        disable_tqdm=not cfg.progress,
        dataloader_num_workers=0,
        ddp_backend="gloo" if world > 1 and not cuda else None,
        use_cpu=not cuda,
    )
