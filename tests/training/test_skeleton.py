"""The training skeleton's seams: losses come from one registry, checkpoints go through public hooks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from peft_ir.errors import PeftIRError


def _reranker_cfg(beir: Path, runs: dict, model: Path, out: Path, **kw):  # type: ignore[no-untyped-def]
    from peft_ir.reranker.config import CrossEncoderSpec
    from peft_ir.reranker.config import RerankerTrainConfig
    from peft_ir.tuning import TuningConfig

    base = dict(train=str(beir), output=str(out), negatives_run=str(runs["train"]), negatives_window=(1, 20), negatives_pool=10,
                cross_encoder=CrossEncoderSpec(model=str(model), query_max_length=8, passage_max_length=24),
                tuning=TuningConfig(method="lora", lora_r=2), group_size=4, batch_size=8, max_steps=2, save_steps=2,
                logging_steps=1, dev_queries=0, progress=False)
    return RerankerTrainConfig(**(base | kw))  # type: ignore[arg-type]


def test_an_unknown_loss_is_refused_with_the_registered_choices(tmp_path: Path) -> None:
    from peft_ir.reranker.config import RerankerTrainConfig
    from peft_ir.reranker.training import train_reranker

    cfg = RerankerTrainConfig(train=str(tmp_path / "absent"), output=str(tmp_path / "o"), loss="hinge")
    with pytest.raises(PeftIRError, match=r"unknown loss 'hinge'; choose one of lce, bce, margin-mse, kl$"):
        train_reranker(cfg)
    assert not (tmp_path / "o").exists()


def test_a_new_loss_is_one_registry_entry(synthetic_beir: Path, synthetic_runs: dict, tiny_bert_dir: Path,
                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A loss class registered in LOSSES trains with nothing else to edit; the trainer calls the object it was given."""
    from peft_ir.reranker.training import train_reranker
    from peft_ir.training import losses

    calls: list[tuple[int, ...]] = []

    class Margin(losses.Loss):
        name = "margin"
        kinds = (losses.CROSS_ENCODER,)

        def on_groups(self, scores: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None) -> torch.Tensor:
            calls.append(tuple(scores.shape))
            positive = scores[:, :1]
            return torch.relu(1 - positive + scores[:, 1:]).mean()

    monkeypatch.setitem(losses.LOSSES, "margin", Margin)
    s = train_reranker(_reranker_cfg(synthetic_beir, synthetic_runs, tiny_bert_dir, tmp_path / "m", loss="margin"))
    assert s["loss"] == "margin" and s["steps"] == 2 and calls == [(8, 4), (8, 4)]
    assert json.loads((tmp_path / "m" / "summary.json").read_text())["loss"] == "margin"


def test_checkpoints_override_no_private_trainer_method_but_the_resume_loader() -> None:
    """Saving goes through the public save_model and the best checkpoint through a callback; only the resume path
    needs the private loader (see its docstring)."""
    from peft_ir.training.tuned import TrainableOnlyCheckpoints

    private = [n for n in vars(TrainableOnlyCheckpoints) if n.startswith("_") and not n.startswith("__")]
    assert private == ["_load_from_checkpoint"]


def test_the_best_step_must_have_a_checkpoint(tmp_path: Path) -> None:
    """With the Trainer's load_best_model_at_end off, its check that every evaluation step is saved is still made."""
    from transformers import TrainingArguments

    from peft_ir.training.args import ScheduleConfig, common_trainer_args
    from peft_ir.training.tuned import refuse_unsaved_best

    ok = ScheduleConfig(train="x", output=str(tmp_path), eval_steps=2, save_steps=4)
    refuse_unsaved_best(TrainingArguments(**common_trainer_args(ok, tmp_path, "eval_m")))
    bad = ScheduleConfig(train="x", output=str(tmp_path), eval_steps=2, save_steps=3)
    with pytest.raises(ValueError, match="round multiple of the evaluation steps"):
        refuse_unsaved_best(TrainingArguments(**common_trainer_args(bad, tmp_path, "eval_m")))
    no_dev = ScheduleConfig(train="x", output=str(tmp_path), eval_steps=2, save_steps=3, dev_queries=0)
    refuse_unsaved_best(TrainingArguments(**common_trainer_args(no_dev, tmp_path, "eval_m")))  # nothing is selected
