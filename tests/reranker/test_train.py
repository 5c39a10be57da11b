"""Cross-encoder training: LCE and BCE lower the loss, only trainable weights are checkpointed, resume works."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from peft_ir.errors import PeftIRError
from peft_ir.reranker.config import CrossEncoderSpec, RerankerTrainConfig
from peft_ir.reranker.model import CrossEncoder
from peft_ir.reranker.training import train_reranker
from peft_ir.training.losses import CROSS_ENCODER, make_loss
from peft_ir.tuning import TuningConfig


def _cfg(data: Path, run: Path, model: Path, out: Path, **kw) -> RerankerTrainConfig:  # type: ignore[no-untyped-def]
    base = dict(train=str(data), output=str(out), negatives_run=str(run), negatives_window=(1, 20), negatives_pool=10,
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
    # the fixture's pooler is random, i.e. never trained: it trains with the head, as MiniLM's does
    s = train_reranker(_cfg(synthetic_beir, synthetic_runs["train"], tiny_ce_dir, out, loss=loss, max_steps=60,
                            lr={"lce": 1e-2, "bce": 5e-2}[loss], save_steps=30, eval_steps=30,
                            tuning=TuningConfig(method="iaa-l", r=4, ar=4, train_pooler=True)))
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
    from peft_ir.data.dev_split import split_examples
    from peft_ir.reranker.training import dev_ndcg, load_training_examples

    cfg = _cfg(synthetic_beir, synthetic_runs["train"], tiny_ce_dir, out)
    _, dev = split_examples(load_training_examples(cfg), cfg.dev_queries, cfg.seed, cfg.dev_candidates)
    assert dev_ndcg(ce, dev) == pytest.approx(s["final_dev"], abs=1e-6)


def test_group_losses() -> None:
    labels = torch.tensor([[1.0, 0.0, 0.0]])
    good, bad = torch.tensor([5.0, -5.0, -5.0]), torch.tensor([-5.0, 5.0, 5.0])
    for loss in ("lce", "bce"):
        assert make_loss(loss, CROSS_ENCODER)(good, labels) < 0.01 < 5 < make_loss(loss, CROSS_ENCODER)(bad, labels)
    with pytest.raises(PeftIRError):
        make_loss("hinge", CROSS_ENCODER)


def test_resume_from_last_complete_checkpoint(synthetic_beir: Path, synthetic_runs: dict, tiny_ce_dir: Path,
                                              tmp_path: Path, cpu_only: None) -> None:
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
    # no record of the starting model was copied (a folder from before model selection): it is evaluated as built,
    # and the decision is the uninterrupted run's
    first = json.loads((straight / "summary.json").read_text())
    for key in ("kept", "start_dev", "candidate_dev", "selection_p"):
        assert s[key] == pytest.approx(first[key], abs=1e-6), key
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


def _delta(out: Path, base: dict[str, torch.Tensor], prefix: str) -> float:
    """Largest change of a trained tensor whose name starts with `prefix`, against the base model."""
    trained = load_file(str(out / "adapter" / "tuning_weights.safetensors"))
    return max((trained[n] - base[n]).abs().max().item() for n in trained if n.startswith(prefix))


def test_full_finetuning_trains_the_new_head_at_its_own_rate(synthetic_beir: Path, synthetic_runs: dict,
                                                              tiny_ce_dir: Path, tmp_path: Path) -> None:
    """Adam moves each weight by about its group's rate on the first step: the new head must move at the PEFT rate
    (1e-3), the pretrained encoder at full fine-tuning's 2e-5; at 2e-5 a head that starts from nothing hardly learns."""
    out = tmp_path / "full"  # no dev queries: the one step's weights are kept, whatever a dev set would say of them
    s = train_reranker(_cfg(synthetic_beir, synthetic_runs["train"], tiny_ce_dir, out, tuning=TuningConfig(method="full"),
                            lr=None, max_steps=1, eval_steps=1, save_steps=1, dev_queries=0))
    assert s["lr"] == 2e-5 and s["head_lr"] == 1e-3
    base = dict(CrossEncoder(CrossEncoderSpec(model=str(tiny_ce_dir))).model.named_parameters())
    base = {n: p.detach() for n, p in base.items()}
    assert 5e-4 < _delta(out, base, "classifier.") < 2e-3
    assert 5e-6 < _delta(out, base, "bert.encoder.") < 5e-5


def test_head_lr_is_its_own_setting_and_defaults_to_the_peft_rate() -> None:
    cfg = RerankerTrainConfig(train="t", output="o", tuning=TuningConfig(method="adapter"), lr=3e-3)
    assert cfg.head_learning_rate() == 3e-3                                   # a PEFT method: the run's rate
    assert RerankerTrainConfig(train="t", output="o", tuning=TuningConfig(method="full")).head_learning_rate() == 1e-3
    assert RerankerTrainConfig(train="t", output="o", tuning=TuningConfig(method="full"),
                               head_lr=5e-4).head_learning_rate() == 5e-4


def test_a_pretrained_pooler_stays_frozen_and_a_never_trained_one_trains(
        synthetic_beir: Path, synthetic_runs: dict, tiny_ce_dir: Path, minilm_path: str, tmp_path: Path) -> None:
    """A plain HF checkpoint's pooler is pretrained: frozen and outside the budget by default; a sentence-transformers
    folder (MiniLM) never trained its pooler, which then trains with the head; train_pooler=true overrides."""
    assert CrossEncoder(CrossEncoderSpec(model=str(tiny_ce_dir))).pooler_pretrained
    assert not CrossEncoder(CrossEncoderSpec(model=minilm_path)).pooler_pretrained
    frozen = train_reranker(_cfg(synthetic_beir, synthetic_runs["train"], tiny_ce_dir, tmp_path / "frozen",
                                 max_steps=2, dev_queries=0, save_steps=2))
    weights = load_file(str(tmp_path / "frozen" / "adapter" / "tuning_weights.safetensors"))
    assert not any(".pooler." in k for k in weights) and frozen["train_pooler"] is False
    assert frozen["pooler_share"] == 0 and round(frozen["head_share"] * frozen["total"]) == 32 + 1   # the classifier
    trained = train_reranker(_cfg(synthetic_beir, synthetic_runs["train"], tiny_ce_dir, tmp_path / "trained",
                                  max_steps=2, dev_queries=0, save_steps=2,
                                  tuning=TuningConfig(method="iaa-l", r=4, ar=4, train_pooler=True)))
    weights = load_file(str(tmp_path / "trained" / "adapter" / "tuning_weights.safetensors"))
    assert {"bert.pooler.dense.weight", "bert.pooler.dense.bias"} <= weights.keys()
    assert round(trained["pooler_share"] * trained["total"]) == 32 * 32 + 32
    assert trained["trainable"] - frozen["trainable"] == 32 * 32 + 32
    # the saved setting comes back with the adapter: the reloaded model scores as the trained one did
    ce = CrossEncoder(CrossEncoderSpec(model=str(tiny_ce_dir)), adapter=tmp_path / "trained" / "adapter")
    torch.testing.assert_close(ce.model.bert.pooler.dense.weight.detach(), weights["bert.pooler.dense.weight"])


def test_no_dev_queries_trains_without_evaluation_and_keeps_the_last_step(
        synthetic_beir: Path, synthetic_runs: dict, tiny_ce_dir: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "nodev"
    with caplog.at_level("INFO", logger="peft_ir.reranker.model"):
        s = train_reranker(_cfg(synthetic_beir, synthetic_runs["train"], tiny_ce_dir, out, dev_queries=0,
                                max_steps=6, save_steps=3, cross_encoder=CrossEncoderSpec(
                                    model=str(tiny_ce_dir), query_max_length=8, passage_max_length=2)))
    # every training passage is longer than 2 tokens, and the log says how many distinct ones there are
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("training: ")]
    assert len(lines) == 2 and "distinct passages longer than 2 tokens" in lines[1]
    n = int(lines[1].split()[1])
    assert n > 1 and lines[1].startswith(f"training: {n} of {n} distinct")
    assert s["steps"] == 6 and s["dev_queries"] == 0 and s["best_dev"] is None and s["final_dev"] is None
    assert s["selection"] == "last step (no dev queries)"
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert not any(k.startswith("eval_") for r in rows for k in r)
    last = load_file(str(out / "checkpoints" / "checkpoint-6" / "adapter" / "tuning_weights.safetensors"))
    kept = load_file(str(out / "adapter" / "tuning_weights.safetensors"))
    assert last.keys() == kept.keys() and all(torch.equal(last[k], kept[k]) for k in kept)


def test_negative_dev_queries_are_refused_before_anything_loads(tmp_path: Path) -> None:
    cfg = RerankerTrainConfig(train=str(tmp_path / "absent"), output=str(tmp_path / "o"), dev_queries=-1)
    with pytest.raises(PeftIRError, match="--dev-queries"):
        train_reranker(cfg)
    assert not (tmp_path / "o").exists()


def test_several_gpus_without_torchrun_are_refused(synthetic_beir: Path, synthetic_runs: dict, tiny_ce_dir: Path,
                                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The HF Trainer would wrap the model in DataParallel, whose replicas lose the tuning hooks."""
    from peft_ir.retriever.config import RetrieverTrainConfig
    from peft_ir.retriever.train import train_retriever
    from peft_ir.training.args import refuse_data_parallel

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(PeftIRError, match=r"4 GPUs.*DataParallel.*torchrun --nproc_per_node 4.*CUDA_VISIBLE_DEVICES"):
        train_reranker(_cfg(synthetic_beir, synthetic_runs["train"], tiny_ce_dir, tmp_path / "ce"))
    with pytest.raises(PeftIRError, match="torchrun"):
        train_retriever(RetrieverTrainConfig(train=str(synthetic_beir), output=str(tmp_path / "bi")))
    assert not (tmp_path / "ce").exists() and not (tmp_path / "bi").exists()   # refused before any work
    monkeypatch.setenv("WORLD_SIZE", "4")   # under torchrun each process holds one GPU: allowed
    refuse_data_parallel()
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.delenv("WORLD_SIZE")
    refuse_data_parallel()                  # one GPU: allowed


@pytest.mark.parametrize("head", ["classifier", "cosine"])
def test_ddp_two_processes_on_cpu(head: str, synthetic_beir: Path, synthetic_runs: dict, tiny_ce_dir: Path,
                                  tmp_path: Path) -> None:
    """torchrun with 2 processes (gloo): rank 0 alone writes the adapter and summary (two ranks renaming onto one
    folder collide), and the dev metric is computed once per evaluation, on rank 0, and shared with rank 1. The
    cosine head reads the token states of the DDP-wrapped model's own forward, so its gradients are synchronised."""
    import socket
    import subprocess
    import sys

    from cpu_only import cpu_env

    repo = Path(__file__).resolve().parents[2]
    spy = tmp_path / "spy.py"  # records which rank computes dev nDCG and saves the adapter, then runs the CLI
    spy.write_text("import os, sys\nimport peft_ir.reranker.training as t\nimport peft_ir.training.skeleton as k\n"
                   "def spy(m, name):\n    real = getattr(m, name)\n"
                   "    def call(*a, **kw):\n        with open(sys.argv[1], 'a') as fh:\n"
                   "            fh.write(f\"{name}:{os.environ['RANK']}\\n\")\n        return real(*a, **kw)\n"
                   "    setattr(m, name, call)\n"
                   "spy(t, 'dev_scores'); spy(k, 'save_tuned'); spy(k, 'save_start')\n"
                   "from peft_ir.cli import main\nsys.exit(main(sys.argv[2:]))\n")
    calls, out = tmp_path / "calls.txt", tmp_path / "ddp"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", port, str(spy), str(calls),
           "train", "reranker", "--train", str(synthetic_beir), "--negatives-run", str(synthetic_runs["train"]),
           "--output", str(out), "--model", str(tiny_ce_dir), "--method", "lora", "--tuning", "lora_r=2",
           "--query-max-length", "8", "--passage-max-length", "24", "--group-size", "4", "--batch-size", "4",
           "--max-steps", "4", "--eval-steps", "2", "--save-steps", "2", "--dev-queries", "8",
           "--dev-candidates", "8", "--head", head]
    done = subprocess.run(cmd, env=cpu_env(HF_HUB_OFFLINE="1", PYTHONPATH=str(repo / "src"), OMP_NUM_THREADS="1"),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # dev nDCG at steps 0, 2, 4 and of the best checkpoint (weighed against the start); one save of the starting
    # point and one of the final adapter (checkpoints save elsewhere)
    assert sorted(calls.read_text().split()) == ["dev_scores:0"] * 4 + ["save_start:0", "save_tuned:0"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["world_size"] == 2 and (out / "adapter" / "tuning_config.json").is_file()
    assert json.loads((out / "cross_encoder.json").read_text())["head"] == head
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "eval_dev_nDCG@10" in r] == [0, 2, 4]


def test_trains_from_a_local_datasets_folder_in_tevatron_schema(tevatron_hf_dir: Path, tiny_ce_dir: Path,
                                                                tmp_path: Path) -> None:
    """`--train hf:<folder written by save_to_disk>`: the rows' own negatives make the groups; no negatives run."""
    from peft_ir.cli import main

    out = tmp_path / "run"
    assert main(["train", "reranker", "--train", f"hf:{tevatron_hf_dir}", "--output", str(out), "--model",
                 str(tiny_ce_dir), "--query-max-length", "8", "--passage-max-length", "24", "--method", "iaa-l",
                 "--tuning", "r=4", "ar=4", "--group-size", "4", "--batch-size", "8", "--max-steps", "2",
                 "--eval-steps", "2", "--save-steps", "2", "--dev-queries", "8", "--dev-candidates", "5",
                 "--max-queries", "20", "--no-progress"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["steps"] == 2 and s["train_queries"] == 20 and s["dev_queries"] == 8
    assert s["train_groups"] == 20  # one positive per query, each with its row's 4 negatives sampled into a group
@pytest.mark.parametrize("loss", ["margin-mse", "kl"])
def test_distillation_on_a_scored_file_lowers_the_loss(loss: str, synthetic_scored: Path, tiny_ce_dir: Path,
                                                       tmp_path: Path) -> None:
    """Each group carries the teacher's scores of its passages; the cross-encoder learns them."""
    out = tmp_path / loss
    s = train_reranker(_cfg(synthetic_scored, None, tiny_ce_dir, out, negatives_run=None, loss=loss, max_steps=40,
                            save_steps=40, dev_queries=0, lr=3e-2, warmup_ratio=0.0, distill_temperature=2.0,
                            tuning=TuningConfig(method="iaa-l", r=4, ar=4, train_pooler=True)))
    losses = _losses(out)
    assert s["loss"] == loss and s["steps"] == 40 and len(losses) == 40
    assert all(0 <= x < float("inf") for x in losses)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5  # 5 steps are one pass over the 40 queries
    assert last < 0.8 * first, losses
