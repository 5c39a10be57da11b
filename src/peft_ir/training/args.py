"""The Trainer arguments every peft-ir training shares (schedule, evaluation, checkpoints, seeds)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from peft_ir.devices import usable_cpus
from peft_ir.errors import PeftIRError
from peft_ir.tuning import TuningConfig

DEFAULT_LR = {"full": 2e-5, "bitfit": 1e-3}
PEFT_LR = 1e-3  # every other method


@dataclass(kw_only=True)
class ScheduleConfig:
    """What the retriever's and the reranker's training configs share: method, schedule, checkpoints, seed."""

    train: str                                  # BEIR folder (with split) or training file
    output: str                                 # run folder
    split: str = "train"
    negatives_run: str | None = None            # first-stage run to take hard negatives from (BEIR input)
    negatives_from: int = 1
    negatives_to: int = 100
    tuning: TuningConfig = field(default_factory=lambda: TuningConfig(method="iaa-l"))
    batch_size: int = 16                        # queries per device per step
    grad_accum: int = 1
    epochs: float = 1.0
    max_steps: int = -1
    lr: float | None = None                     # None: 2e-5 for full, 1e-3 for the PEFT methods
    warmup_ratio: float = 0.1
    dev_queries: int = 50                       # training queries held out for model selection; 0: none, last step kept
    dev_seed: int | None = None                 # held-out queries and sampled negative pools; None: `seed`
    eval_steps: int = 50
    save_steps: int = 50
    logging_steps: int = 10
    seed: int = 42
    resume: bool = False
    progress: bool = True

    def dev_split_seed(self) -> int:
        """The seed of the data: which queries are held out for dev and which mined negatives each query gets.

        Fixing it lets runs with different seeds share one dev set; `seed` still orders and samples training.
        """
        return self.seed if self.dev_seed is None else self.dev_seed

    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR.get(self.tuning.method, PEFT_LR)

    def has_dev(self) -> bool:
        """Whether a dev split selects the checkpoint; without one the last step's weights are kept."""
        return self.dev_queries > 0

    def check(self) -> None:
        """Refuse bad schedule values and launches before anything is loaded."""
        if isinstance(self.dev_queries, bool) or not isinstance(self.dev_queries, int) or self.dev_queries < 0:
            raise PeftIRError(f"--dev-queries must be a whole number >= 0 (0: no dev split); got {self.dev_queries!r}")
        refuse_data_parallel()


def refuse_data_parallel() -> None:
    """Several GPUs in one process make the HF Trainer wrap the model in torch's DataParallel, whose per-step
    replicas lose the forward hooks that the adapters, aside modules and prefixes are made of: refuse it."""
    if "WORLD_SIZE" in os.environ or not torch.cuda.is_available():
        return
    gpus = torch.cuda.device_count()
    if gpus > 1:
        raise PeftIRError(
            f"{gpus} GPUs are visible to one process: the Hugging Face Trainer would wrap the model in DataParallel, "
            "whose replicas lose peft-ir's tuning hooks. Launch one process per GPU with "
            f"`torchrun --nproc_per_node {gpus} -m peft_ir.cli train ...` (or `accelerate launch`), "
            "or train on one GPU: CUDA_VISIBLE_DEVICES=0")


def dataloader_workers(cuda: bool, world: int) -> int:
    """Worker processes that tokenise and collate batches while a GPU computes: up to 4 per rank, leaving each rank
    a core of its own. None on the CPU, where they would compete with the model for the same cores."""
    if not cuda:
        return 0
    return max(0, min(4, usable_cpus() // max(world, 1) - 1))


def common_trainer_args(cfg: ScheduleConfig, output_dir: Path, metric: str) -> dict[str, Any]:
    """Keyword arguments for (SentenceTransformer)TrainingArguments from a retriever or reranker config.

    Keeps the best dev checkpoint (`metric`, higher is better) and at most two checkpoints on disk; without a dev
    split (`dev_queries` 0) nothing is evaluated and the last step's weights are kept. The best checkpoint's weights
    are loaded back by training/tuned.py's callback, not by the Trainer's `load_best_model_at_end`, which looks for
    full weight files that our checkpoints do not hold.
    """
    cuda = torch.cuda.is_available()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    workers = dataloader_workers(cuda, world)
    return dict(
        output_dir=str(output_dir),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate(),
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a ratio of the total steps (transformers 5)
        lr_scheduler_type="linear",
        eval_strategy="steps" if cfg.has_dev() else "no",
        eval_steps=cfg.eval_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=2,
        metric_for_best_model=metric if cfg.has_dev() else None,
        greater_is_better=True,
        logging_steps=cfg.logging_steps,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to=[],
        disable_tqdm=not cfg.progress,
        dataloader_num_workers=workers,
        dataloader_pin_memory=cuda,             # page-locked batches copy to the GPU asynchronously
        dataloader_persistent_workers=workers > 0,
        ddp_backend="gloo" if world > 1 and not cuda else None,
        use_cpu=not cuda,
    )
