"""Fixtures for the export tests: one real 2-step training of each kind, and copies of it tuned with any method whose
trained weights are perturbed (so every method's output differs from the base's) in seconds instead of trainings."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/export/export_texts.py

from export_texts import Variant  # noqa: E402


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, synthetic_beir: Path, synthetic_runs: dict[str, Path],
            tiny_bert_dir: Path) -> dict[str, Path]:
    """A finished 2-step training output per kind ('retriever', 'reranker'), as `peft-ir train` writes it."""
    from tiny_train import reranker_config, retriever_config

    from peft_ir.reranker.training import train_reranker
    from peft_ir.retriever.train import train_retriever
    from peft_ir.tuning import TuningConfig

    root = tmp_path_factory.mktemp("trained")
    small = dict(max_steps=2, dev_queries=0, eval_steps=2, save_steps=2, logging_steps=1)
    train_retriever(retriever_config(synthetic_beir, tiny_bert_dir, root / "retriever",
                                     tuning=TuningConfig(method="lora", lora_r=4), **small))
    train_reranker(reranker_config(synthetic_beir, synthetic_runs["train"], tiny_bert_dir, root / "reranker",
                                   tuning=TuningConfig(method="lora", lora_r=4), **small))
    return {"retriever": root / "retriever", "reranker": root / "reranker"}


@pytest.fixture(scope="session")
def variant(trained: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Variant:
    """variant(kind, method, spec=None, **sizes) -> a training output folder like `trained[kind]`, tuned with `method`
    and its trainable weights perturbed (seeded); summary.json's counts and tuning are the new model's. `spec` (an
    EncoderSpec or CrossEncoderSpec) replaces the model the template was trained on, e.g. the real MiniLM."""
    import dataclasses

    import torch

    from peft_ir.export.source import read_trained
    from peft_ir.reranker.model import load_base
    from peft_ir.retriever.encoder import BiEncoder
    from peft_ir.tuning import TuningConfig, apply_tuning, head_parameters, save_tuned, trainable_parameters

    made: dict[tuple, Path] = {}

    def make(kind: str, method: str, spec: object = None, **sizes: object) -> Path:
        key = (kind, method, repr(spec), tuple(sorted(sizes.items())))
        if key in made:
            return made[key]
        template = read_trained(trained[kind])
        out = tmp_path_factory.mktemp(f"{kind}-{method}")
        tuning = TuningConfig(method=method, **sizes)  # type: ignore[arg-type]
        spec = spec or template.spec
        if kind == "retriever":
            base = BiEncoder(spec, device="cpu").hf_model  # type: ignore[arg-type]
            base_name = str(spec.model) if spec.model else None  # type: ignore[attr-defined]
        else:
            base, _ = load_base(spec, device="cpu")  # type: ignore[arg-type]
            base_name = str(spec.model) if spec.model else "all-MiniLM-L6-v2"  # type: ignore[attr-defined]
        tuned = apply_tuning(base, tuning)
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in tuned.parameters():
                if p.requires_grad:
                    p.add_(torch.randn(p.shape, generator=generator) * 0.05)
        save_tuned(tuned, out / "adapter", base_name)  # as the trainings name it (training/skeleton.py)
        spec_file, section = ("encoder.json", "encoder") if kind == "retriever" else ("cross_encoder.json",
                                                                                      "cross_encoder")
        written = dataclasses.asdict(spec)  # type: ignore[call-overload]
        (out / spec_file).write_text(json.dumps(written | {"adapter": str(out / "adapter")}, indent=2))
        shutil.copyfile(template.root / "metrics.jsonl", out / "metrics.jsonl")
        n, total = trainable_parameters(tuned)
        summary = template.summary | {"method": method, "trainable": n, "total": total, "share": n / total}
        summary["config"] = summary["config"] | {"tuning": tuning.to_dict(), "output": str(out), section: written}
        if kind == "reranker":
            head = head_parameters(tuned)
            summary |= {"method_share": (n - head) / total, "head_share": head / total}
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        made[key] = out
        return out

    return make
