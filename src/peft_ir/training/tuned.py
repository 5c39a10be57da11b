"""A Trainer mixin whose checkpoints hold only what the tuning method trains (plus the Trainer's own state files).

Mix it in front of any transformers Trainer subclass (HF Trainer, SentenceTransformerTrainer, ...) and construct it
with `tuned` (the HF model that apply_tuning acted on) and `base_name` (the base model's name or path, recorded in
each checkpoint). Checkpoints are written by the public `save_model`; the best dev checkpoint is loaded back at the
end of training by a callback; the Trainer's own `load_best_model_at_end` stays off, since it looks for full weight
files (see training/args.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn
from transformers import TrainerCallback

from peft_ir.training.args import eval_autocast
from peft_ir.tuning import load_trainable, save_tuned
from peft_ir.tuning.checkpoint import ADAPTER_DIR


class LoadBestTrainable(TrainerCallback):
    """At the end of training, load the trainable weights of the best dev checkpoint (every rank: they must agree).

    Only when a dev metric selects checkpoints (`metric_for_best_model`); without one the last step's weights stay.
    """

    def __init__(self, tuned: nn.Module):
        self.tuned = tuned

    def on_train_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        if args.metric_for_best_model is not None and state.best_model_checkpoint is not None:
            load_trainable(self.tuned, Path(state.best_model_checkpoint) / ADAPTER_DIR)


def refuse_unsaved_best(args: Any) -> None:
    """The best dev step must have a checkpoint to be loaded: evaluate and save on the same schedule, saving at a
    multiple of the evaluation steps (the check the Trainer makes under `load_best_model_at_end`, same message)."""
    if args.metric_for_best_model is None or args.eval_strategy == "no":
        return
    if args.eval_strategy != args.save_strategy:
        raise ValueError("--load_best_model_at_end requires the save and eval strategy to match, except when "
                         f'--save_strategy="best", but found\n- Evaluation strategy: {args.eval_strategy}\n'
                         f"- Save strategy: {args.save_strategy}")
    if args.eval_strategy == "steps" and args.save_steps % args.eval_steps != 0:
        raise ValueError("--load_best_model_at_end requires the saving steps to be a round multiple of the evaluation "
                         f"steps, but found {args.save_steps}, which is not a round multiple of {args.eval_steps}.")


class TrainableOnlyCheckpoints:
    """Checkpoints of the trainable weights (`<checkpoint>/adapter`) instead of full models, and resuming from them."""

    def __init__(self, *args: Any, tuned: nn.Module, base_name: str | None, **kwargs: Any):
        callbacks = [*(kwargs.pop("callbacks", None) or []), LoadBestTrainable(tuned)]
        super().__init__(*args, callbacks=callbacks, **kwargs)  # type: ignore[call-arg]
        self.tuned = tuned
        self.base_name = base_name
        refuse_unsaved_best(self.args)  # type: ignore[attr-defined]

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        """Dev evaluation in the training's mixed precision (training/args.py's eval_autocast)."""
        with eval_autocast(self.args):  # type: ignore[attr-defined]
            return super().evaluate(*args, **kwargs)  # type: ignore[misc]

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Every checkpoint's model save: the trainable weights and their config, never a full model."""
        if not self.args.should_save:  # type: ignore[attr-defined]
            return  # under DDP every rank may get here; one writer, or the ranks race on the same folder
        out = Path(output_dir or self.args.output_dir)  # type: ignore[attr-defined]
        out.mkdir(parents=True, exist_ok=True)
        save_tuned(self.tuned, out / ADAPTER_DIR, self.base_name)

    def _load_from_checkpoint(self, checkpoint_path: str, model: Any = None) -> None:
        """Resume: restore the trainable weights from `<checkpoint>/adapter`.

        A private override, kept because no public hook does this job: `Trainer.train(resume_from_checkpoint=...)`
        calls `_load_from_checkpoint` before any callback runs, and the HF Trainer's version raises "Can't find a
        valid checkpoint" unless the folder holds a full weights file (model.safetensors, pytorch_model.bin or a
        sharded index) or a `peft`-library adapter, while SentenceTransformerTrainer's rebuilds a whole
        SentenceTransformer from the folder. Resuming without passing the checkpoint would lose what the Trainer
        restores after this call (optimizer, scheduler, RNG states, trainer state, the position in the epoch).
        """
        load_trainable(self.tuned, Path(checkpoint_path) / ADAPTER_DIR)
