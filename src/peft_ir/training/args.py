"""The Trainer arguments every peft-ir training shares (schedule, evaluation, checkpoints, seeds)."""

from __future__ import annotations

import logging
import os
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peft_ir.devices import usable_cpus
from peft_ir.errors import PeftIRError
from peft_ir.settings import setting
from peft_ir.training.tracking import Tracker, tracking_problem, trackers

if TYPE_CHECKING:  # the tuning package loads torch; flags are built from these fields without it
    from peft_ir.tuning.config import TuningConfig

DEFAULT_LR = {"full": 2e-5, "bitfit": 1e-3}
PEFT_LR = 1e-3  # every other method
DEFAULT_METHOD = "iaa-l"
MIN_TEST_QUERIES = 30  # fewer dev queries than this: the selection's paired t-test has little power

log = logging.getLogger(__name__)


def default_tuning() -> TuningConfig:
    from peft_ir.tuning.config import TuningConfig  # noqa: PLC0415

    return TuningConfig(method=DEFAULT_METHOD)


@dataclass(kw_only=True)
class ScheduleConfig:
    """What the retriever's and the reranker's training configs share: data, method, schedule, checkpoints, seed.

    Each field is a setting defined once (peft_ir.settings): `peft-ir train` flags and the YAML sections are built
    from these fields, defaults and help text included.
    """

    train: str = setting(help="BEIR folder (with --split), training file (Tevatron / FlagEmbedding / triples / "
                              "scored: teacher scores for margin-mse and kl), hf:DATASET[:SPLIT] (a Hub id or a "
                              "local datasets folder) or irds:ID (training triples, e.g. "
                              "irds:msmarco-passage/train/triples-small)")
    output: str = setting(help="run folder: adapter/, checkpoints/, metrics.jsonl, curves.png, summary.json")
    split: str = setting("train", help="qrels split of a BEIR folder given as --train")
    negatives_run: str | None = setting(
        None, help="first-stage TREC run of the training queries to take hard negatives from (BEIR --train only)")
    negatives_window: tuple[int, int] = setting(
        (1, 100), metavar=("FROM", "TO"), help="rank window of that run the negatives are sampled from (top-k: 1 k)")
    tuning: TuningConfig = setting(default_factory=default_tuning, help="the PEFT method and its sizes")
    batch_size: int = setting(16, help="queries per device per step")
    grad_accum: int = setting(1, help="gradient accumulation steps")
    epochs: float = setting(1.0, help="passes over the training queries (unless max_steps is set)")
    max_steps: int = setting(-1, help="optimiser steps; -1: as many as the epochs give")
    lr: float | None = setting(None, help=f"learning rate; default: {DEFAULT_LR['full']:g} for full, "
                                          f"{PEFT_LR:g} for bitfit and the PEFT methods")
    warmup_ratio: float = setting(0.1, help="share of the steps the learning rate warms up over, then decays linearly")
    distill_temperature: float = setting(1.0, help="temperature T of the kl loss: softmax(score / T) for the model "
                                                   "and the teacher, the loss times T^2")
    dev_queries: int = setting(50, help="training queries held out for model selection (0: none, the last step "
                                        "is kept)")
    max_queries: int | None = setting(None, help="train on this many queries only (a seeded subset; default: all); "
                                                 "an hf: or irds: source is read no further than its first "
                                                 "max_queries + dev_queries queries")
    dev_seed: int | None = setting(None, help="seed of the held-out dev queries and the mined negative pools "
                                              "(default: the seed); fix it to compare seeds on one dev set")
    selection_alpha: float = setting(0.05, help="the best dev checkpoint replaces the starting model only when a "
                                                "one-sided paired t-test over the dev queries finds it better at this "
                                                "level; otherwise the starting weights are kept")
    selection_margin: float | None = setting(None, help="instead of the t-test: the checkpoint is kept when its dev "
                                                        "mean beats the starting model's by more than this margin")
    eval_steps: int = setting(50, help="steps between dev evaluations")
    save_steps: int = setting(50, help="steps between checkpoints (the best and the last are kept)")
    logging_steps: int = setting(10, help="steps between loss lines in metrics.jsonl")
    seed: int = setting(42, help="training order and sampling, the added modules' initialisation")
    resume: bool = setting(False, help="continue from the last complete checkpoint in the output folder")
    progress: bool = setting(True, help="progress bars")
    bf16: bool = setting(False, help="bfloat16 mixed precision: autocast, the trained weights and the optimiser stay "
                                     "in float32 (CUDA GPUs with bf16, or the CPU)")
    fp16: bool = setting(False, help="float16 mixed precision with loss scaling (CUDA only)")
    gradient_checkpointing: bool = setting(False, help="recompute each layer's activations in the backward pass: "
                                                       "less memory for longer texts and larger batches, at the "
                                                       "cost of a second forward pass per layer")
    report_to: list[Tracker] = setting(
        default_factory=list, help="experiment trackers the trainer logs to: tensorboard (event files in "
                                   "<output>/tensorboard), wandb (<output>/wandb), mlflow (<output>/mlruns) unless "
                                   "WANDB_DIR / MLFLOW_TRACKING_URI are set; default none (wandb and mlflow: pip "
                                   "install them first)")

    def dev_split_seed(self) -> int:
        """The seed of the data: which queries are held out for dev and which mined negatives each query gets.

        Fixing it lets runs with different seeds share one dev set; `seed` still orders and samples training.
        """
        return self.seed if self.dev_seed is None else self.dev_seed

    def read_limit(self) -> int | None:
        """How many queries of a streamed (hf: / irds:) source to read: enough for dev and max_queries; None: all."""
        return None if self.max_queries is None else self.max_queries + self.dev_queries

    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR.get(self.tuning.method, PEFT_LR)

    def has_dev(self) -> bool:
        """Whether a dev split selects the checkpoint; without one the last step's weights are kept."""
        return self.dev_queries > 0

    def check(self) -> None:
        """Refuse bad schedule values and launches before anything is loaded."""
        if isinstance(self.dev_queries, bool) or not isinstance(self.dev_queries, int) or self.dev_queries < 0:
            raise PeftIRError(f"--dev-queries must be a whole number >= 0 (0: no dev split); got {self.dev_queries!r}")
        if self.max_queries is not None and (isinstance(self.max_queries, bool) or not isinstance(self.max_queries, int)
                                             or self.max_queries < 1):
            raise PeftIRError(f"--max-queries must be a whole number >= 1 (or unset: all); got {self.max_queries!r}")
        if not 0 < self.selection_alpha <= 1:
            raise PeftIRError(f"--selection-alpha must be in (0, 1]; got {self.selection_alpha!r}")
        if self.selection_margin is not None and not self.selection_margin >= 0:
            raise PeftIRError(f"--selection-margin must be >= 0 (a checkpoint must beat the start); "
                              f"got {self.selection_margin!r}")
        if 0 < self.dev_queries < MIN_TEST_QUERIES and self.selection_margin is None:
            log.warning("--dev-queries %d: a paired t-test over so few queries rarely finds a real gain, so the "
                        "starting model will often be kept; hold out at least %d (or set --selection-margin)",
                        self.dev_queries, MIN_TEST_QUERIES)
        problem = tracking_problem(self.report_to)
        if problem:
            raise PeftIRError(f"--report-to: {problem}")
        check_precision(self.bf16, self.fp16)
        refuse_data_parallel()
        from peft_ir.data.examples import require_training_source  # noqa: PLC0415

        require_training_source(self.train)  # an unreachable hf: / irds: source, before any model is loaded


def check_precision(bf16: bool, fp16: bool) -> None:
    """Refuse a mixed precision this machine cannot train in, before anything is loaded."""
    import torch  # noqa: PLC0415

    if bf16 and fp16:
        raise PeftIRError("--bf16 and --fp16 exclude each other: choose one mixed precision")
    cuda = torch.cuda.is_available()
    if fp16 and not cuda:
        raise PeftIRError("--fp16 needs a CUDA GPU (float16 autocast with loss scaling); on the CPU use --bf16, "
                          "or train in float32")
    if bf16 and cuda and not torch.cuda.is_bf16_supported():
        raise PeftIRError(f"--bf16: {torch.cuda.get_device_name()} has no bfloat16 support; use --fp16")


def eval_autocast(args: Any) -> AbstractContextManager[object]:
    """Dev evaluation in the training's mixed precision: the Trainer autocasts its training steps only, so without
    this the starting model and the checkpoints would be weighed in float32 while they train in bf16 / fp16."""
    import torch  # noqa: PLC0415

    from peft_ir.precision import autocast  # noqa: PLC0415

    dtype = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else None
    return autocast(args.device, dtype)


def check_attention(attn_implementation: str | None, tuning: TuningConfig) -> None:
    """Refuse, before anything is loaded, a flash attention that is not installed, or one under learned prefixes
    (prefix, mam), which go through eager or sdpa attention (tuning/methods/prefix.py)."""
    from peft_ir.models import check_attention as installed  # noqa: PLC0415

    installed(attn_implementation)
    if attn_implementation not in (None, "eager", "sdpa") and "prefix_len" in tuning.used_fields():
        raise PeftIRError(f"--attn-implementation {attn_implementation}: method {tuning.method} prepends learned "
                          "keys and values through eager or sdpa attention; use sdpa (or another method)")


def refuse_data_parallel() -> None:
    """Several GPUs in one process make the HF Trainer wrap the model in torch's DataParallel, whose per-step
    replicas lose the forward hooks that the adapters, aside modules and prefixes are made of: refuse it."""
    import torch  # noqa: PLC0415

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

    Mixed precision is the Trainer's (autocast through accelerate over float32 trained weights, which they are even
    on a bfloat16 checkpoint: tuning/precision.py; fp16 with a loss scaler);
    gradient checkpointing is the Trainer's too (non-reentrant, each layer recomputed in the backward pass: the
    tuning hooks run again inside it, see tuning.apply_tuning).
    Keeps the best dev checkpoint (`metric`, higher is better) and at most two checkpoints on disk; without a dev
    split (`dev_queries` 0) nothing is evaluated and the last step's weights are kept. The best checkpoint's weights
    are loaded back by training/tuned.py's callback, not by the Trainer's `load_best_model_at_end`, which looks for
    full weight files that our checkpoints do not hold.
    """
    import torch  # noqa: PLC0415

    from peft_ir.precision import warn_emulated_bf16  # noqa: PLC0415

    cuda = torch.cuda.is_available()
    if cfg.bf16 and not cuda:
        warn_emulated_bf16("training")
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
        report_to=trackers(cfg.report_to),
        disable_tqdm=not cfg.progress,
        dataloader_num_workers=workers,
        dataloader_pin_memory=cuda,             # page-locked batches copy to the GPU asynchronously
        dataloader_persistent_workers=workers > 0,
        ddp_backend="gloo" if world > 1 and not cuda else None,
        use_cpu=not cuda,
        bf16=cfg.bf16,
        fp16=cfg.fp16,
        activation_checkpointing=cfg.gradient_checkpointing,  # transformers' name for gradient checkpointing
    )
