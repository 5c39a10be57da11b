"""Refactoring guard: short trainings write bit-identical weights to those recorded before the training code was
reshaped (same seeds, same example order, same sampling calls in the same order, same checkpoint selection).

The checksums are of the saved adapter's tensors. Floating-point kernels differ between library versions, CPU
instruction sets and CPU models (the same AVX512 stack gives other bits on an AMD EPYC than on an Intel Xeon), so a
pin only binds on the stack and the CPU model it was recorded on (PINNED_ON, PINS); elsewhere the test skips.
Record new pins (after a deliberate change of behaviour) with PEFT_IR_PRINT_PINS=1 and `-s`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

PINNED_ON = {"torch": "2.13.0+cpu", "transformers": "5.24.0", "sentence_transformers": "6.2.0", "cpu": "AVX512"}

PINS = {  # by the start of /proc/cpuinfo's model name
    # Recorded at the merge of model selection (#18): dev sets from the first stage. (The pins recorded on an AMD EPYC
    # at 7103301 held through the reshaping, #17; they predate this deliberate change and were not re-recorded there.)
    "Intel(R) Xeon(R) Processor @ 2.60GHz": {
        "retriever-infonce": "4c06a64063685344fd664301e4f0d0b3f931f8a3fc2d164d9b088825e3b1f975",
        "retriever-gradcache": "385ebad5270cd67d09bd0d7926f867df2ca7fc3ef3b3e999838b8f05e2acd68c",
        "reranker-lce": "da3d8b126264a57ef27f60d5c8aebf8c5b65ec67af90409a0bcc502dee802e60",
        "reranker-bce-full": "068b3c018f029ad9c60794f7552d71d668db3e6393d053502141e7260ef78bce",
    },
}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _pins() -> dict[str, str] | None:
    model = _cpu_model()
    return next((pins for prefix, pins in PINS.items() if model.startswith(prefix)), None)


def _stack() -> dict[str, str]:
    import sentence_transformers
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__, "cpu": torch.backends.cpu.get_cpu_capability()}


@pytest.fixture
def one_thread(cpu_only: None, one_torch_thread: None) -> None:
    """On the CPU, one thread: a reduction split across threads may sum in another order."""


def _digest(out: Path, summary: dict[str, Any]) -> str:
    """The adapter's tensors (names and bytes, in name order), which checkpoint was selected after how many steps, and
    which checkpoints were kept (the best and the last, at most two)."""
    from safetensors.torch import load_file

    h = hashlib.sha256()
    for path in sorted((out / "adapter").glob("*.safetensors")):
        weights = load_file(str(path))
        for name in sorted(weights):
            h.update(f"{path.name}:{name}:{tuple(weights[name].shape)}".encode())
            h.update(weights[name].contiguous().view(-1).numpy().tobytes())
    best = Path(summary["best_checkpoint"]).name if summary["best_checkpoint"] else None
    kept = sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*"))
    h.update(json.dumps([summary["steps"], best, summary["best_dev"], kept]).encode())
    return h.hexdigest()


def _retriever(kind: str, beir: Path, runs: dict, model: Path, out: Path) -> dict[str, Any]:
    from peft_ir.retriever.config import EncoderSpec
    from peft_ir.retriever.config import RetrieverTrainConfig
    from peft_ir.retriever.train import train_retriever
    from peft_ir.tuning import TuningConfig

    # selection_alpha 1: the best checkpoint is kept whenever it beats the start at all, so the pins cover training
    common = dict(train=str(beir), output=str(out), batch_size=8, logging_steps=1, lr=5e-3, progress=False,
                  selection_alpha=1.0)
    if kind == "infonce":
        cfg = RetrieverTrainConfig(**common, encoder=EncoderSpec(model=str(model), normalize=True,
                                                                 passage_max_length=32, query_max_length=16),
                                   tuning=TuningConfig(method="iaa-l", r=4, ar=4), negatives_run=str(runs["train"]),
                                   negatives_window=(1, 20), num_negatives=1, max_steps=8, eval_steps=2, save_steps=2,
                                   dev_queries=8, dev_corpus=40)
    else:  # GradCache over dot products, no dev split
        cfg = RetrieverTrainConfig(**common, encoder=EncoderSpec(model=str(model), normalize=False,
                                                                 passage_max_length=32, query_max_length=16),
                                   tuning=TuningConfig(method="lora", lora_r=4), num_negatives=0, cache_mini_batch=2,
                                   max_steps=4, save_steps=2, dev_queries=0, temperature=0.5)
    return train_retriever(cfg)


def _reranker(kind: str, beir: Path, runs: dict, model: Path, out: Path) -> dict[str, Any]:
    from peft_ir.reranker.config import CrossEncoderSpec
    from peft_ir.reranker.config import RerankerTrainConfig
    from peft_ir.reranker.training import train_reranker
    from peft_ir.tuning import TuningConfig

    common = dict(train=str(beir), output=str(out), negatives_run=str(runs["train"]), negatives_window=(1, 20),
                  negatives_pool=10, cross_encoder=CrossEncoderSpec(model=str(model), query_max_length=8,
                                                                    passage_max_length=24),
                  group_size=4, batch_size=8, logging_steps=1, dev_candidates=8, progress=False, selection_alpha=1.0)
    if kind == "lce":
        cfg = RerankerTrainConfig(**common, loss="lce",
                                  tuning=TuningConfig(method="iaa-l", r=4, ar=4, train_pooler=True), max_steps=8,
                                  eval_steps=2, save_steps=2, dev_queries=8, lr=1e-2, warmup_ratio=0.0)
    else:  # full fine-tuning: the head in its own optimizer group at its own rate
        cfg = RerankerTrainConfig(**common, loss="bce", tuning=TuningConfig(method="full"), max_steps=4, eval_steps=2,
                                  save_steps=2, dev_queries=8, max_queries=20)
    return train_reranker(cfg)


SELECTION_KEYS = ["kept", "selection_candidate", "selection_rule", "start_dev", "candidate_dev", "selection_p"]
SUMMARY_KEYS = {
    "retriever": ["method", "trainable", "total", "share", "steps", "best_checkpoint", "best_dev", "final_dev",
                  "dev_metric", "selection", "train_examples", "dev_queries", "dev_corpus", "dev_seed", "wall_seconds", "world_size",
                  "loss", "similarity", "resumed_from", "config", *SELECTION_KEYS],
    "reranker": ["method", "loss", "trainable", "total", "share", "method_share", "head_share", "pooler_share",
                 "train_pooler", "lr", "head_lr", "steps", "best_checkpoint", "best_dev", "final_dev", "dev_metric",
                 "selection", "train_groups", "train_queries", "dev_queries", "dev_seed", "dev_pairs", "wall_seconds",
                 "world_size", "resumed_from", "config", *SELECTION_KEYS],
}
CASES = [("retriever", "infonce"), ("retriever", "gradcache"), ("reranker", "lce"), ("reranker", "bce-full")]


@pytest.mark.parametrize(("stage", "kind"), CASES, ids=[f"{s}-{k}" for s, k in CASES])
def test_trained_weights_match_the_pinned_checksum(stage: str, kind: str, synthetic_beir: Path, synthetic_runs: dict,
                                                   tiny_bert_dir: Path, tmp_path: Path, one_thread: None) -> None:
    train = _retriever if stage == "retriever" else _reranker
    out = tmp_path / "run"
    summary = train(kind, synthetic_beir, synthetic_runs, tiny_bert_dir, out)
    digest = _digest(out, summary)
    assert sorted(summary) == sorted(SUMMARY_KEYS[stage])
    if os.environ.get("PEFT_IR_PRINT_PINS"):
        print(f"PIN {stage}-{kind} {digest} {_stack()} {summary['steps']} {summary['best_checkpoint']} "
              f"{sorted(p.name for p in (out / 'checkpoints').glob('checkpoint-*'))}")
    if _stack() != PINNED_ON:
        pytest.skip(f"pins were recorded on {PINNED_ON}; this stack is {_stack()}")
    pins = _pins()
    if pins is None:
        pytest.skip(f"no pins recorded on this CPU model ({_cpu_model()}); pins exist for {', '.join(PINS)}")
    assert digest == pins[f"{stage}-{kind}"]
