"""Resuming picks the last checkpoint that was completely written."""

from __future__ import annotations

from pathlib import Path

from peft_ir.training.checkpoints import last_complete_checkpoint


def _ckpt(root: Path, step: int, state: str | None = '{"global_step": 1}', adapter: bool = True) -> Path:
    path = root / f"checkpoint-{step}"
    (path / "adapter").mkdir(parents=True)
    if adapter:
        (path / "adapter" / "tuning_config.json").write_text("{}")
    if state is not None:
        (path / "trainer_state.json").write_text(state)
    return path


def test_half_written_checkpoints_are_skipped_and_removed(tmp_path: Path) -> None:
    good = _ckpt(tmp_path, 4)
    truncated = _ckpt(tmp_path, 8, state='{"global_st')  # killed while the Trainer wrote its state
    no_state = _ckpt(tmp_path, 12, state=None)
    no_adapter = _ckpt(tmp_path, 16, adapter=False)
    assert last_complete_checkpoint(tmp_path) == good
    assert good.exists() and not truncated.exists() and not no_state.exists() and not no_adapter.exists()
    assert last_complete_checkpoint(tmp_path / "absent") is None
