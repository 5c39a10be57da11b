"""One training run, whatever is trained: the steps every peft-ir training takes, written once.

A `TrainingTask` (the retriever's, the re-ranker's) supplies what differs: the data, the tuned model, the loss, the
dev evaluation, its Trainer and what its summary adds. `run_training` does the rest, in a fixed order that is part of
the behaviour: the seed is set before the data are sampled and the model is built after them, so that the same
config trains bit-identical weights.
"""

from __future__ import annotations

import json
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import asdict
from pathlib import Path
from typing import Any

from torch import nn

from peft_ir.atomic import atomic_open
from peft_ir.devices import device_for_process, log_device
from peft_ir.errors import PeftIRError
from peft_ir.training.args import ScheduleConfig, common_trainer_args, eval_autocast
from peft_ir.training.checkpoints import SUMMARY_FILE, prepare_run_dir
from peft_ir.training.logging import JsonlMetrics, plot_curves, readable_console
from peft_ir.training.selection import (
    KEPT_BEST, KEPT_LAST, NO_DEV_SELECTION, START_DIR, START_SCORES, decide, describe, read_start, restore_start,
    save_start,
)
from peft_ir.training.tracking import point_local_files, point_tensorboard
from peft_ir.tuning import save_tuned, trainable_parameters
from peft_ir.tuning.checkpoint import ADAPTER_DIR

log = logging.getLogger(__name__)


class TrainingTask(ABC):
    """What one kind of model brings to a training run; run_training calls its methods in the order listed here."""

    spec_file: str  # the model spec written beside the adapter, e.g. "encoder.json"

    @abstractmethod
    def load_data(self) -> Any:
        """Read the examples, hold out the dev split, build the training rows; returns the Trainer's train_dataset.
        Runs right after the seed is set."""

    @abstractmethod
    def build_model(self, device: str) -> nn.Module:
        """Build the model on `device` and apply the tuning method; returns the tuned model (what is saved)."""

    @property
    @abstractmethod
    def base_name(self) -> str | None:
        """The base model's name or path, recorded with the saved weights (known once the model is built)."""

    @property
    @abstractmethod
    def dev_metric(self) -> str:
        """The logged dev metric that selects the best checkpoint (known once the data are loaded)."""

    @abstractmethod
    def loss(self) -> Any:
        """The training loss, handed to the Trainer."""

    @abstractmethod
    def evaluator(self) -> Any:
        """The dev evaluation handed to the Trainer; None without dev queries."""

    @abstractmethod
    def dev_per_query(self) -> dict[str, float]:
        """The dev metric of the model's current weights, per dev query (model selection's paired test reads it).
        The evaluator handed to the Trainer keeps its latest evaluation's values as `per_query` too."""

    @abstractmethod
    def training_arguments(self, common: dict[str, Any]) -> Any:
        """The Trainer's arguments: `common` (training/args.py) plus what this kind of training adds."""

    @abstractmethod
    def trainer_class(self) -> type:
        """A Trainer class with TrainableOnlyCheckpoints mixed in front."""

    @abstractmethod
    def trainer_kwargs(self, loss: Any, evaluator: Any) -> dict[str, Any]:
        """The rest of the Trainer's constructor arguments (`model` among them), given the loss and the evaluator."""

    @abstractmethod
    def summary_fields(self, trainer: Any) -> dict[str, Any]:
        """What this task adds to summary.json; called on rank 0 after training, before the adapter is saved."""

    @abstractmethod
    def curve_title(self, share: float) -> str:
        """The title of curves.png, given the trainable share of the model."""

    @abstractmethod
    def spec(self) -> Any:
        """The model spec dataclass written to `spec_file` (with the adapter's path), to rebuild the trained model."""


def refuse_unsupported_checkpointing(model: nn.Module) -> None:
    """Refuse --gradient-checkpointing for a backbone whose transformers class has none (MPNet, for one) here, not
    from inside the Trainer's first step."""
    from transformers import PreTrainedModel, __version__  # noqa: PLC0415

    base = next((m for m in model.modules() if isinstance(m, PreTrainedModel)), None)
    if base is not None and not base.supports_gradient_checkpointing:
        raise PeftIRError(f"--gradient-checkpointing: {type(base).__name__} (model_type '{base.config.model_type}') "
                          f"has no gradient checkpointing in transformers {__version__}; train without it")


def run_training(cfg: ScheduleConfig, task: TrainingTask) -> dict[str, Any]:
    """Train; keep the best dev checkpoint when it beats the starting model on dev (training/selection.py), else the
    starting model (the last step without dev queries); write `<output>/adapter`, metrics.jsonl, curves.png, the
    spec file and summary.json; returns the summary (under torchrun: on rank 0, which alone writes; {} on the
    others)."""
    from transformers import set_seed  # noqa: PLC0415

    cfg.check()
    device = device_for_process()  # this rank's GPU under torchrun: the model is built there, not on GPU 0
    out, ckpt_dir, resume_from = prepare_run_dir(cfg.output, cfg.resume)

    set_seed(cfg.seed)
    dataset = task.load_data()
    if not cfg.has_dev():
        log.info("--dev-queries 0: no dev evaluation; the weights of the last step are kept")

    log_device("training", device)
    tuned = task.build_model(device)
    if cfg.gradient_checkpointing:
        refuse_unsupported_checkpointing(tuned)
    trainable, total = trainable_parameters(tuned)
    metric = task.dev_metric
    loss, evaluator = task.loss(), task.evaluator()
    args = task.training_arguments(common_trainer_args(cfg, ckpt_dir, metric))
    point_local_files(cfg.report_to, out)
    trainer = task.trainer_class()(args=args, train_dataset=dataset, callbacks=[JsonlMetrics(out / "metrics.jsonl")],
                                   tuned=tuned, base_name=task.base_name, **task.trainer_kwargs(loss, evaluator))
    point_tensorboard(trainer, out)
    readable_console(trainer, metric if cfg.has_dev() else None)
    t0 = time.perf_counter()
    if resume_from is None and cfg.has_dev():
        trainer.evaluate()  # the zero-step point of the curve: the untrained model, logged like every evaluation
    start = None
    if cfg.has_dev() and trainer.is_world_process_zero():
        with eval_autocast(trainer.args):
            start = starting_point(out, task, tuned, evaluator, fresh=resume_from is None)
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    wall = time.perf_counter() - t0
    if not trainer.is_world_process_zero():  # one rank writes: two renaming onto one adapter folder collide
        return {}

    chosen = NO_DEV_SELECTION
    if start is not None:
        with eval_autocast(trainer.args):
            chosen = select(cfg, task, tuned, out, start, has_best=trainer.state.best_model_checkpoint is not None)
    own = task.summary_fields(trainer)
    save_tuned(tuned, out / ADAPTER_DIR, task.base_name)
    plot_curves(out / "metrics.jsonl", out / "curves.png", metric, title=task.curve_title(trainable / total))
    summary = {
        "method": cfg.tuning.method, "trainable": trainable, "total": total, "share": trainable / total,
        "steps": trainer.state.global_step, "best_checkpoint": trainer.state.best_model_checkpoint,
        "best_dev": trainer.state.best_metric, "dev_metric": metric if cfg.has_dev() else None, **chosen, **own,
        "dev_seed": cfg.dev_split_seed(), "wall_seconds": wall, "world_size": trainer.args.world_size,
        "resumed_from": str(resume_from) if resume_from else None, "config": jsonable(asdict(cfg)),
    }
    with atomic_open(out / task.spec_file) as fh:
        json.dump(jsonable(asdict(task.spec())) | {"adapter": str(out / ADAPTER_DIR)}, fh, indent=2)
    with atomic_open(out / SUMMARY_FILE) as fh:
        json.dump(summary, fh, indent=2)
    return summary


def starting_point(out: Path, task: TrainingTask, tuned: nn.Module, evaluator: Any, *, fresh: bool
                   ) -> dict[str, float]:
    """The starting model's per-query dev values, recorded in `<output>/start` with its trainable weights (rank 0,
    before the first step). A fresh run records the step-0 evaluation just made; a resumed one reads the record, or,
    in a run folder from before model selection, evaluates the model as built (resuming loads the checkpoint later,
    inside `train`, so these are still the starting weights, rebuilt from the same seed)."""
    if fresh:
        per_query = dict(evaluator.per_query)
    else:
        recorded = read_start(out)
        if recorded is not None:
            return recorded
        log.info("%s holds no record of the starting model (written before model selection): evaluating it", out)
        per_query = task.dev_per_query()
    save_start(out, tuned, task.base_name, per_query)
    return per_query


def select(cfg: ScheduleConfig, task: TrainingTask, tuned: nn.Module, out: Path, start: dict[str, float], *,
           has_best: bool) -> dict[str, Any]:
    """Weigh the weights training ended with (the best dev checkpoint, loaded back; the last step when no evaluation
    came after step 0) against the starting model; restore the start unless the candidate beats it. Returns the
    summary's selection fields."""
    candidate = task.dev_per_query()
    if set(candidate) != set(start):
        raise PeftIRError(f"{out / START_DIR / START_SCORES} holds dev values of other queries than this run's dev "
                          f"set; delete {out / START_DIR} to re-evaluate the starting model")
    sel = decide(start, candidate, alpha=cfg.selection_alpha, margin=cfg.selection_margin,
                 candidate_name=KEPT_BEST if has_best else KEPT_LAST)
    if sel.start_kept:
        restore_start(out, tuned)
    fields = {"selection": f"{sel.kept} ({sel.rule}: p = {sel.p_value:.3g})", **sel.summary()}
    log.info("model selection: %s", describe({**fields, "dev_metric": task.dev_metric}))  # the CLI prints it too
    return fields


def jsonable(obj: Any) -> Any:
    """`obj` as JSON would give it back (paths and other objects as strings)."""
    return json.loads(json.dumps(obj, default=str))
