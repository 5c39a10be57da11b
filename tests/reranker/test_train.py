"""Cross-encoder training: LCE and BCE lower the loss, only trainable weights are checkpointed, resume works."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from peft_ir.errors import PeftIRError
from peft_ir.reranker.model import CrossEncoder, CrossEncoderSpec
from peft_ir.reranker.training import RerankerTrainConfig, group_loss, train_reranker
from peft_ir.tuning import TuningConfig


def _cfg(data: Path, run: Path, model: Path, out: Path, **kw) -> RerankerTrainConfig:  # type: ignore[no-untyped-def]
    base = dict(train=str(data), output=str(out), negatives_run=str(run), negatives_to=20, negatives_pool=10,
                cross_encoder=CrossEncoderSpec(model=str(model), query_max_length=8, passage_max_length=24),
                tuning=TuningConfig(method="iaa-l", r=4, ar=4), group_size=4, batch_size=8, max_steps=12,
                eval_steps=4, save_steps=4, logging_steps=1, dev_queries=8, dev_candidates=8, lr=1e-2,
                warmup_ratio=0.0, progress=False)
    base.update(kw)
    return RerankerTrainConfig(**base)  # type: ignore[arg-type]


def _losses(out: Path) -> list[float]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.mark.parametrize("loss", ["lce", "bce"])
def test_training_lowers_the_loss(loss: str, synthetic_beir: Path, synthetic_runs: dict, tiny_ce_dir: Path,
                                  tmp_path: Path) -> None:
    out = tmp_path / loss
    s = train_reranker(_cfg(synthetic_beir, synthetic_runs["train"], tiny_ce_dir, out, loss=loss, max_steps=60,
                            lr={"lce": 1e-2, "bce": 5e-2}[loss], save_steps=30, eval_steps=30))
    losses = _losses(out)
    assert len(losses) == 60
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.8 * first, losses
    assert s["loss"] == loss and s["steps"] == 60 and 0 < s["share"] < 1
    weights = load_file(str(out / "adapter" / "tuning_weights.safetensors"))
    assert sum(t.numel() for t in weights.values()) == s["trainable"]  # adapter + aside + head, nothing else
    assert any(k.startswith("classifier.") for k in weights)
    for ckpt in (out / "checkpoints").glob("checkpoint-*"):
        assert not list(ckpt.glob("model.safetensors"))
        assert (ckpt / "adapter" / "tuning_weights.safetensors").is_file()
    assert (out / "curves.png").stat().st_size > 1000
    # the saved adapter reproduces the trained model's dev metric
    ce = CrossEncoder(_cfg(synthetic_beir, synthetic_runs["train"], tiny_ce_dir, out).cross_encoder,
                      adapter=out / "adapter")
    from peft_ir.reranker.training import dev_ndcg, load_training_examples, split_examples

    cfg = _cfg(synthetic_beir, synthetic_runs["train"], tiny_ce_dir, out)
    _, dev = split_examples(load_training_examples(cfg), cfg.dev_queries, cfg.seed, cfg.dev_candidates)
    assert dev_ndcg(ce, dev) == pytest.approx(s["final_dev"], abs=1e-6)


def test_group_losses() -> None:
    labels = torch.tensor([[1.0, 0.0, 0.0]])
    good, bad = torch.tensor([5.0, -5.0, -5.0]), torch.tensor([-5.0, 5.0, 5.0])
    for loss in ("lce", "bce"):
        assert group_loss(good, labels, loss) < 0.01 < 5 < group_loss(bad, labels, loss)
    with pytest.raises(PeftIRError):
        group_loss(good, labels, "hinge")


def test_resume_from_last_complete_checkpoint(synthetic_beir: Path, synthetic_runs: dict, tiny_ce_dir: Path,
                                              tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    train_reranker(_cfg(synthetic_beir, synthetic_runs["train"], tiny_ce_dir, straight))
    with pytest.raises(PeftIRError, match="already holds a finished"):
        train_reranker(_cfg(synthetic_beir, synthetic_runs["train"], tiny_ce_dir, straight))

    # simulate a run killed after step 8: copy its state at that point, plus a half-written checkpoint-12
    killed = tmp_path / "killed"
    part = _cfg(synthetic_beir, synthetic_runs["train"], tiny_ce_dir, killed, max_steps=12)
    ckpts = killed / "checkpoints"
    ckpts.mkdir(parents=True)
    shutil.copytree(straight / "checkpoints" / "checkpoint-8", ckpts / "checkpoint-8")
    (ckpts / "checkpoint-12").mkdir()  # no trainer_state.json: incomplete, must be discarded
    with pytest.raises(PeftIRError, match="--resume"):
        train_reranker(part)
    part.resume = True
    s = train_reranker(part)
    assert s["resumed_from"].endswith("checkpoint-8") and s["steps"] == 12
    a = load_file(str(straight / "adapter" / "tuning_weights.safetensors"))
    b = load_file(str(killed / "adapter" / "tuning_weights.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)


def test_dev_seed_gives_every_training_seed_one_dev_set(synthetic_beir: Path, synthetic_runs: dict, tiny_ce_dir: Path,
                                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import peft_ir.reranker.training as training
    from dev_split import dev_sets_by_seed

    def start(seed: int, dev_seed: int | None, i: int) -> None:
        train_reranker(_cfg(synthetic_beir, synthetic_runs["train"], tiny_ce_dir, tmp_path / str(i), seed=seed,
                            dev_seed=dev_seed))

    fixed_1, fixed_2, own_1, own_2 = dev_sets_by_seed(monkeypatch, training, "split_examples", start)
    assert fixed_1 == fixed_2                   # same held-out queries and the same sampled candidates
    assert own_1.queries != own_2.queries       # by default each seed holds out its own queries
