"""The GPU-scale training settings on the CPU: bf16 autocast trains (fp16 is refused), a bfloat16 checkpoint trains
float32 weights and its adapter encodes and re-ranks, gradient checkpointing gives the step of no checkpointing for
hook-based methods and prefixes, attn_implementation reaches the model and a flash attention that is not installed is
refused before anything loads."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from peft_ir.errors import PeftIRError
from peft_ir.reranker.config import CrossEncoderSpec, RerankerTrainConfig
from peft_ir.reranker.model import CrossEncoder
from peft_ir.reranker.training import train_reranker
from peft_ir.retriever.config import EncoderSpec, RetrieverTrainConfig
from peft_ir.retriever.encoder import BiEncoder
from peft_ir.retriever.train import train_retriever
from peft_ir.tuning import TuningConfig
from tiny_train import reranker_config, retriever_config

FLASH_INSTALLED = importlib.util.find_spec("flash_attn") is not None
pytestmark = pytest.mark.filterwarnings("ignore:.*gradient_checkpointing_enable.*:FutureWarning")  # ST's, transformers'

SIZES = {"adapter": {"r": 4}, "iaa-l": {"r": 4, "ar": 4}, "prefix": {"prefix_len": 4}}


def _losses(out: Path) -> list[float]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return {k: v for f in sorted((out / "adapter").glob("*.safetensors")) for k, v in load_file(f).items()}


def _one_step(data: Path, model: Path, out: Path, method: str = "iaa-l", **kw) -> dict:  # type: ignore[no-untyped-def]
    spec = EncoderSpec(model=str(model), passage_max_length=24, query_max_length=12)
    return train_retriever(retriever_config(data, model, out, encoder=spec, max_steps=1, dev_queries=0,
                                            logging_steps=1, warmup_ratio=0.0,
                                            tuning=TuningConfig(method=method, **SIZES[method]), **kw))


def test_bf16_on_the_cpu_trains_one_step_under_autocast(cpu_only, synthetic_beir: Path, tiny_bert_dir: Path,
                                                        tmp_path: Path) -> None:
    _one_step(synthetic_beir, tiny_bert_dir, tmp_path / "fp32")
    _one_step(synthetic_beir, tiny_bert_dir, tmp_path / "bf16", bf16=True)
    (fp32,), (bf16,) = _losses(tmp_path / "fp32"), _losses(tmp_path / "bf16")
    assert bf16 != fp32 and bf16 == pytest.approx(fp32, rel=0.05)  # bfloat16 products, the same loss roughly
    weights = _weights(tmp_path / "bf16")
    assert weights and all(t.dtype == torch.float32 for t in weights.values())  # autocast: fp32 weights are kept
    summary = json.loads((tmp_path / "bf16" / "summary.json").read_text())
    assert summary["config"]["bf16"] is True and summary["steps"] == 1


def test_bf16_trains_a_decoder_reranker_on_the_cpu(cpu_only, synthetic_beir: Path, synthetic_runs: dict,
                                                   tiny_decoder_dir, tmp_path: Path) -> None:
    spec = CrossEncoderSpec(model=str(tiny_decoder_dir("qwen3")), query_max_length=8, passage_max_length=16)
    cfg = RerankerTrainConfig(train=str(synthetic_beir), output=str(tmp_path / "run"), cross_encoder=spec,
                              negatives_run=str(synthetic_runs["train"]), negatives_pool=8, group_size=4, batch_size=4,
                              max_steps=1, dev_queries=0, logging_steps=1, bf16=True, progress=False,
                              tuning=TuningConfig(method="lora", lora_r=2))
    assert train_reranker(cfg)["steps"] == 1
    (loss,) = _losses(tmp_path / "run")
    assert loss == loss and abs(loss) < 1e3  # finite


def test_bf16_training_weighs_every_dev_evaluation_in_bf16(cpu_only, synthetic_beir: Path, synthetic_runs: dict,
                                                          tiny_bert_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The step-0 evaluation (the starting model's record), those during training and model selection's: all in
    bfloat16, so that the starting model and the checkpoints are weighed alike."""
    from peft_ir.reranker import training as reranker_training
    from peft_ir.retriever.dev_eval import DevEvaluator

    seen: list[bool] = []

    def in_bf16() -> None:
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)

    evaluate, dev_scores = DevEvaluator.__call__, reranker_training.dev_scores
    monkeypatch.setattr(DevEvaluator, "__call__", lambda self, *a, **k: (in_bf16(), evaluate(self, *a, **k))[1])
    monkeypatch.setattr(reranker_training, "dev_scores", lambda *a, **k: (in_bf16(), dev_scores(*a, **k))[1])
    schedule = dict(max_steps=4, eval_steps=2, save_steps=2, bf16=True)
    train_retriever(retriever_config(synthetic_beir, tiny_bert_dir, tmp_path / "retriever", **schedule))
    assert len(seen) == 4 and all(seen)  # steps 0, 2, 4 and the selection's re-evaluation of the kept weights
    seen.clear()
    train_reranker(reranker_config(synthetic_beir, synthetic_runs["train"], tiny_bert_dir, tmp_path / "reranker",
                                   **schedule))
    assert len(seen) == 4 and all(seen)


@pytest.fixture(scope="module")
def bf16_llama_dir(tiny_decoder_dir, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama folder saved in bfloat16, as most LLM checkpoints are (transformers 5 loads them so)."""
    from transformers import AutoModel, AutoTokenizer

    source, out = tiny_decoder_dir("llama"), tmp_path_factory.mktemp("tiny-llama-bf16")
    AutoModel.from_pretrained(source, dtype=torch.float32).to(torch.bfloat16).save_pretrained(out)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    return out


@pytest.mark.parametrize("bf16", [False, True], ids=["no-autocast", "bf16-autocast"])
def test_a_bf16_checkpoint_trains_float32_weights_and_its_adapter_encodes(cpu_only, synthetic_beir: Path,
                                                                         bf16_llama_dir: Path, tmp_path: Path,
                                                                         bf16: bool) -> None:
    spec = EncoderSpec(model=str(bf16_llama_dir), query_max_length=12)
    base = BiEncoder(spec, device="cpu")
    assert base.hf_model.dtype == torch.bfloat16  # loaded in the checkpoint's dtype
    _one_step(synthetic_beir, bf16_llama_dir, tmp_path / "run", bf16=bf16)
    (loss,) = _losses(tmp_path / "run")
    assert loss == loss and abs(loss) < 1e3  # finite
    weights = _weights(tmp_path / "run")
    assert weights and all(t.dtype == torch.float32 for t in weights.values())  # float32 masters, not bfloat16
    tuned = BiEncoder(EncoderSpec(model=str(bf16_llama_dir), query_max_length=12,
                                  adapter=str(tmp_path / "run" / "adapter")), device="cpu")
    frozen = {p.dtype for p in tuned.hf_model.parameters() if not p.requires_grad}
    assert frozen == {torch.bfloat16}
    texts = ["alpha beta", "river stone cloud tree light"]
    with_adapter, without = tuned.encode_queries(texts), base.encode_queries(texts)
    assert with_adapter.dtype == np.float32 and with_adapter.shape == without.shape
    assert np.isfinite(with_adapter).all() and not np.allclose(with_adapter, without)


def test_a_bf16_checkpoint_trains_a_reranker_whose_adapter_scores(cpu_only, synthetic_beir: Path,
                                                                  synthetic_runs: dict, bf16_llama_dir: Path,
                                                                  tmp_path: Path) -> None:
    """LoRA (peft's adapter upcast as get_peft_model's autocast_adapter_dtype does) and the task head, a base
    module that trains in place (a float32 master of the bfloat16 head)."""
    spec = CrossEncoderSpec(model=str(bf16_llama_dir), query_max_length=8, passage_max_length=16)
    cfg = RerankerTrainConfig(train=str(synthetic_beir), output=str(tmp_path / "run"), cross_encoder=spec,
                              negatives_run=str(synthetic_runs["train"]), negatives_pool=8, group_size=4, batch_size=4,
                              max_steps=1, dev_queries=0, logging_steps=1, progress=False,
                              tuning=TuningConfig(method="lora", lora_r=2))
    assert train_reranker(cfg)["steps"] == 1
    weights = _weights(tmp_path / "run")
    assert any(".lora_" in k for k in weights) and any("score" in k for k in weights)
    assert all(t.dtype == torch.float32 for t in weights.values())
    reranker = CrossEncoder(spec, adapter=tmp_path / "run" / "adapter", device="cpu")
    assert {p.dtype for p in reranker.model.parameters() if not p.requires_grad} == {torch.bfloat16}
    scores = reranker.score(["alpha beta", "gamma"], ["river stone", "cloud tree light"])
    assert len(scores) == 2 and all(math.isfinite(s) for s in scores)


def test_fp16_without_cuda_and_two_precisions_are_refused_before_anything_loads(cpu_only, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(PeftIRError, match="--fp16 needs a CUDA GPU.*use --bf16"):
        train_retriever(RetrieverTrainConfig(train="no/such/folder", output=str(out), fp16=True))
    with pytest.raises(PeftIRError, match="--bf16 and --fp16 exclude each other"):
        RetrieverTrainConfig(train="t", output=str(out), bf16=True, fp16=True).check()
    assert not out.exists()


@pytest.mark.parametrize("method", sorted(SIZES))
@pytest.mark.parametrize("base", ["bert", "llama"])
def test_gradient_checkpointing_gives_the_same_training_step(base: str, method: str, count_checkpoints, cpu_only,
                                                             synthetic_beir: Path, tiny_bert_dir: Path,
                                                             tiny_decoder_dir, tmp_path: Path) -> None:
    """One optimiser step with and without --gradient-checkpointing: the same loss and the same weights after the
    step (Adam's first step moves each weight by about the learning rate in its gradient's direction, so a gradient
    lost or changed by the recomputation shows), and the layers were indeed recomputed."""
    model = tiny_bert_dir if base == "bert" else tiny_decoder_dir("llama")
    _one_step(synthetic_beir, model, tmp_path / "plain", method)
    calls = count_checkpoints()
    _one_step(synthetic_beir, model, tmp_path / "checkpointed", method, gradient_checkpointing=True)
    assert calls["n"] >= 2  # two layers, at least once each
    (plain,), (checkpointed,) = _losses(tmp_path / "plain"), _losses(tmp_path / "checkpointed")
    assert checkpointed == pytest.approx(plain, rel=1e-5)
    a, b = _weights(tmp_path / "plain"), _weights(tmp_path / "checkpointed")
    assert a.keys() == b.keys() and a
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name


def test_gradient_checkpointing_reaches_the_reranker_trainer(count_checkpoints, cpu_only, synthetic_beir: Path,
                                                            synthetic_runs: dict, tiny_decoder_dir,
                                                            tmp_path: Path) -> None:
    """The cross-encoder trains on the HF Trainer itself (not sentence-transformers'): the flag reaches it too."""
    spec = CrossEncoderSpec(model=str(tiny_decoder_dir("llama")), query_max_length=8, passage_max_length=16)
    losses = []
    for on in (False, True):
        calls = count_checkpoints()
        out = tmp_path / f"run-{on}"
        train_reranker(RerankerTrainConfig(train=str(synthetic_beir), output=str(out), cross_encoder=spec,
                                           negatives_run=str(synthetic_runs["train"]), negatives_pool=8, group_size=4,
                                           batch_size=4, max_steps=1, dev_queries=0, logging_steps=1, progress=False,
                                           gradient_checkpointing=on, tuning=TuningConfig(method="iaa-l", r=4, ar=4)))
        assert (calls["n"] > 0) == on
        losses.append(_losses(out)[0])
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)


def test_attn_implementation_reaches_both_models(tiny_decoder_dir) -> None:
    model = str(tiny_decoder_dir("llama"))
    eager = BiEncoder(EncoderSpec(model=model, attn_implementation="eager", query_max_length=8), device="cpu")
    sdpa = BiEncoder(EncoderSpec(model=model, attn_implementation="sdpa", query_max_length=8), device="cpu")
    assert eager.hf_model.config._attn_implementation == "eager"
    assert sdpa.hf_model.config._attn_implementation == "sdpa"
    texts = ["alpha beta", "river stone cloud tree light"]
    assert torch.allclose(torch.tensor(eager.encode_queries(texts)), torch.tensor(sdpa.encode_queries(texts)),
                          atol=1e-5)
    ce = CrossEncoder(CrossEncoderSpec(model=model, attn_implementation="eager"), device="cpu")
    assert ce.model.config._attn_implementation == "eager"


@pytest.mark.skipif(FLASH_INSTALLED, reason="flash_attn is installed here")
def test_flash_attention_is_refused_when_not_installed(tmp_path: Path) -> None:
    flash = "flash_attention_2"
    for build in (lambda: BiEncoder(EncoderSpec(model="no/such-model", attn_implementation=flash)),
                  lambda: CrossEncoder(CrossEncoderSpec(model="no/such-model", attn_implementation=flash)),
                  lambda: RerankerTrainConfig(train="t", output=str(tmp_path),
                                              cross_encoder=CrossEncoderSpec(attn_implementation=flash)).check()):
        with pytest.raises(PeftIRError, match="flash_attention_2 needs the flash_attn package"):
            build()


def test_flash_attention_under_prefixes_is_refused(monkeypatch, tmp_path: Path) -> None:
    """Prefix tuning (and MAM) prepend keys and values through eager or sdpa attention only."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "flash_attn" else real(name, *a))
    spec = EncoderSpec(attn_implementation="flash_attention_2")
    for method in ("prefix", "mam"):
        cfg = RetrieverTrainConfig(train="t", output=str(tmp_path), encoder=spec, tuning=TuningConfig(method=method))
        with pytest.raises(PeftIRError, match=f"method {method} prepends learned keys and values"):
            cfg.check()


def test_gradient_checkpointing_on_a_backbone_without_it_is_refused_before_training(cpu_only, synthetic_beir: Path,
                                                                                    minilm_path: str,
                                                                                    tmp_path: Path) -> None:
    """MPNet has no gradient checkpointing in transformers: refused with the model type named, no step taken."""
    from transformers import AutoTokenizer, MPNetModel

    from tiny_models import tiny_config

    model = tmp_path / "tiny-mpnet"
    tok = AutoTokenizer.from_pretrained(minilm_path)
    MPNetModel(tiny_config("mpnet", vocab_size=len(tok))).save_pretrained(model)
    tok.save_pretrained(model)
    with pytest.raises(PeftIRError, match="MPNetModel \\(model_type 'mpnet'\\) has no gradient checkpointing"):
        _one_step(synthetic_beir, model, tmp_path / "run", gradient_checkpointing=True)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
