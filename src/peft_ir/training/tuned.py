"""A Trainer mixin whose checkpoints hold only what the tuning method trains (plus the Trainer's own state files).

Mix it in front of any transformers Trainer subclass (HF Trainer, SentenceTransformerTrainer, ...) and implement
`tuned_model()` (the HF model that apply_tuning acted on); set `peft_ir_base` to the base model's name or path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peft_ir.tuning import load_trainable, save_tuned

ADAPTER_DIR = "adapter"


class TrainableOnlyCheckpoints:
    peft_ir_base: str | None = None

    def tuned_model(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
        if not self.args.should_save:  # type: ignore[attr-defined]
            return  # under DDP every rank may get here; one writer, or the ranks race on the same folder
        out = Path(output_dir or self.args.output_dir)  # type: ignore[attr-defined]
        out.mkdir(parents=True, exist_ok=True)
        save_tuned(self.tuned_model(), out / ADAPTER_DIR, self.peft_ir_base)

    def _load_from_checkpoint(self, checkpoint_path: str, model: Any = None) -> None:
        load_trainable(self.tuned_model(), Path(checkpoint_path) / ADAPTER_DIR)

    def _load_best_model(self) -> None:
        best = self.state.best_model_checkpoint  # type: ignore[attr-defined]
        if best:
            self._load_from_checkpoint(best)
