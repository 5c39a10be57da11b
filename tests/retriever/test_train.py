"""Bi-encoder training: learns, logs, checkpoints only trainable weights, resumes after SIGKILL, runs under DDP."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cpu_only import cpu_env
from safetensors.torch import load_file

from peft_ir.retriever.config import EncoderSpec
from peft_ir.retriever.config import RetrieverTrainConfig
from peft_ir.retriever.train import train_retriever
from peft_ir.tuning import TuningConfig
from tiny_train import retriever_config

REPO = Path(__file__).resolve().parents[2]


def _cfg(data: Path, model: Path, out: Path, **kw) -> RetrieverTrainConfig:  # type: ignore[no-untyped-def]
    return retriever_config(data, model, out, **kw)


def test_training_writes_adapter_metrics_and_curve(synthetic_beir: Path, tiny_bert_dir: Path, tmp_path: Path) -> None:
    s = train_retriever(_cfg(synthetic_beir, tiny_bert_dir, tmp_path / "run"))
    out = tmp_path / "run"
    assert s["steps"] == 12 and s["method"] == "iaa-l" and 0 < s["share"] < 1
    assert s["loss"] == "MultipleNegativesRankingLoss" and s["similarity"] == "cos_sim"  # normalised: cosine
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in rows)
    dev = [r[s["dev_metric"]] for r in rows if s["dev_metric"] in r]
    assert len(dev) >= 3  # step 0, 6, 12
    assert (out / "curves.png").stat().st_size > 1000
    weights = load_file(next((out / "adapter").glob("*.safetensors")))
    assert sum(t.numel() for t in weights.values()) == s["trainable"]  # only trainable weights are saved
    for ckpt in (out / "checkpoints").glob("checkpoint-*"):
        assert not list(ckpt.glob("model.safetensors"))  # no full-model copies in checkpoints
    with pytest.raises(Exception, match="already holds a finished"):
        train_retriever(_cfg(synthetic_beir, tiny_bert_dir, tmp_path / "run"))


def _cli(data: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "peft_ir.cli", "train", "retriever", "--train", str(data), "--output", str(out),
            "--model", str(model), "--normalize", "--passage-max-length", "32", "--query-max-length", "16",
            "--method", "iaa-l", "--tuning", "r=4", "ar=4", "--batch-size", "8", "--num-negatives", "0",
            "--max-steps", "16", "--eval-steps", "4", "--save-steps", "4", "--logging-steps", "2",
            "--dev-queries", "8", "--dev-corpus", "40", "--lr", "5e-3", *extra]


def test_resume_after_sigkill_matches_uninterrupted_run(synthetic_beir: Path, tiny_bert_dir: Path, tmp_path: Path) -> None:
    env = cpu_env(HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO / "src"))  # exact resume: CPU kernels, even on a GPU box
    straight = tmp_path / "straight"
    subprocess.run(_cli(synthetic_beir, tiny_bert_dir, straight), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli(synthetic_beir, tiny_bert_dir, killed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "checkpoint-8" / "trainer_state.json").exists():
        assert proc.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists() and not (killed / "adapter").exists()

    done = subprocess.run(_cli(synthetic_beir, tiny_bert_dir, killed, "--resume"), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["resumed_from"].endswith(("checkpoint-8", "checkpoint-12")) and summary["steps"] == 16
    first = json.loads((straight / "summary.json").read_text())  # the same model kept, on the same evidence
    assert summary["kept"] == first["kept"] and summary["start_dev"] == first["start_dev"]
    assert summary["selection_p"] == pytest.approx(first["selection_p"], abs=1e-6)
    a = load_file(next((straight / "adapter").glob("*.safetensors")))
    b = load_file(next((killed / "adapter").glob("*.safetensors")))
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] - b[k]).abs().max().item() < 1e-5, k


def test_ddp_two_processes_on_cpu(synthetic_beir: Path, tiny_bert_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    # gloo on the CPU even on a GPU box: NCCL with 2 ranks would need 2 GPUs
    env = cpu_env(HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    with socket.socket() as s:  # torchrun's --master_port 0 does not pick a free port: find one
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", port,
           "-m", "peft_ir.cli", "train", "retriever", "--train", str(synthetic_beir), "--output", str(out),
           "--model", str(tiny_bert_dir), "--normalize", "--passage-max-length", "32", "--method", "lora",
           "--batch-size", "4", "--num-negatives", "0", "--max-steps", "4", "--eval-steps", "2", "--save-steps", "2",
           "--dev-queries", "8", "--dev-corpus", "40"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["config"]["tuning"]["method"] == "lora"
    assert summary["world_size"] == 2


def test_gradcache_loss_trains(synthetic_beir: Path, tiny_bert_dir: Path, tmp_path: Path) -> None:
    """--cache-mini-batch switches to the cached (GradCache) loss, which trains in mini-batches of 2."""
    s = train_retriever(_cfg(synthetic_beir, tiny_bert_dir, tmp_path / "cached", cache_mini_batch=2, max_steps=6,
                             eval_steps=6, save_steps=6))
    rows = [json.loads(x) for x in (tmp_path / "cached" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert s["steps"] == 6 and losses and all(loss == loss and loss > 0 for loss in losses)
    assert s["config"]["cache_mini_batch"] == 2 and s["loss"] == "CachedMultipleNegativesRankingLoss"


def test_dev_seed_gives_every_training_seed_one_dev_set(synthetic_beir: Path, synthetic_runs: dict, tiny_bert_dir: Path,
                                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import peft_ir.retriever.train as train_module
    from dev_split import dev_sets_by_seed

    def start(seed: int, dev_seed: int | None, i: int) -> None:
        train_retriever(_cfg(synthetic_beir, tiny_bert_dir, tmp_path / str(i), seed=seed, dev_seed=dev_seed,
                             negatives_run=str(synthetic_runs["train"]), negatives_window=(1, 20), num_negatives=1))

    fixed_1, fixed_2, own_1, own_2 = dev_sets_by_seed(monkeypatch, train_module, "split_dev", start)
    assert fixed_1 == fixed_2                   # same held-out queries, same dev corpus (negatives included)
    assert own_1.queries != own_2.queries       # by default each seed holds out its own queries


class _Stop(Exception):
    """Ends training at its first evaluation: these tests look at the trainer as training would start."""


def _trainer_as_built(cfg: RetrieverTrainConfig, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """The trainer `train_retriever` builds for `cfg` (loss, data collator, dev evaluator), stopped before step 0."""
    import peft_ir.retriever.train as train_module

    real, built = train_module._trainer_class, []

    def spy():  # type: ignore[no-untyped-def]
        class Stopped(real()):  # type: ignore[misc]
            def evaluate(self, *args, **kw):  # type: ignore[no-untyped-def]
                built.append(self)
                raise _Stop

        return Stopped

    monkeypatch.setattr(train_module, "_trainer_class", spy)
    with pytest.raises(_Stop):
        train_retriever(cfg)
    return built[0]


@pytest.fixture(scope="module")
def long_query_beir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic folder with every query 15 times as long (45 words, about 47 tokens)."""
    from synthetic import make_beir

    root = make_beir(tmp_path_factory.mktemp("long") / "beir")
    rows = [json.loads(x) for x in (root / "queries.jsonl").read_text().splitlines()]
    (root / "queries.jsonl").write_text("".join(json.dumps(r | {"text": " ".join([r["text"]] * 15)}) + "\n"
                                                for r in rows))
    return root


@pytest.mark.parametrize("cache_mini_batch", [None, 2])
def test_unnormalised_encoder_trains_with_the_dot_product_it_is_searched_with(
        synthetic_beir: Path, tiny_bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        cache_mini_batch: int | None) -> None:
    """normalize: false searches by inner product, so the loss is InfoNCE over dot products / temperature."""
    import torch
    import torch.nn.functional as F

    cfg = _cfg(synthetic_beir, tiny_bert_dir, tmp_path / "run", temperature=0.5, cache_mini_batch=cache_mini_batch)
    cfg.encoder.normalize = False
    trainer = _trainer_as_built(cfg, monkeypatch)
    rows = [trainer.train_dataset[i] for i in range(6)]
    st = trainer.model.eval()
    with torch.no_grad():
        got = trainer.loss(*trainer.collect_features(trainer.data_collator(rows))).item()
        features, _ = trainer.collect_features(trainer.data_collator(rows))
        q, p = (st(f)["sentence_embedding"] for f in features)
        expected = F.cross_entropy(q @ p.T / 0.5, torch.arange(len(rows))).item()
    assert not torch.allclose(q.norm(dim=1), torch.ones(len(rows)), atol=1e-2)  # really unnormalised
    assert got == pytest.approx(expected, rel=1e-4)


def test_training_truncates_queries_at_query_max_length(long_query_beir: Path, tiny_bert_dir: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Training cuts queries where search cuts them (query_max_length), not at the passage length."""
    cfg = _cfg(long_query_beir, tiny_bert_dir, tmp_path / "run")
    cfg.encoder.query_max_length, cfg.encoder.passage_max_length = 40, 16
    trainer = _trainer_as_built(cfg, monkeypatch)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    assert batch["query_input_ids"].shape[1] == 40      # the queries are longer: cut at the query limit
    assert batch["positive_input_ids"].shape[1] <= 16   # passages at the passage limit


def test_dev_evaluator_scores_as_search_does(long_query_beir: Path, tiny_bert_dir: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Dev nDCG ranks by the inner product of the vectors search would compute: same lengths, same similarity."""
    import numpy as np

    import peft_ir.retriever.dev_eval as dev_eval
    from peft_ir.retriever.encoder import BiEncoder

    cfg = _cfg(long_query_beir, tiny_bert_dir, tmp_path / "run", tuning=TuningConfig(method="lora", lora_r=4))
    cfg.encoder.normalize, cfg.encoder.query_max_length, cfg.encoder.passage_max_length = False, 40, 16
    trainer = _trainer_as_built(cfg, monkeypatch)
    evaluator, seen, real = trainer.evaluator, [], dev_eval.dev_run
    monkeypatch.setattr(dev_eval, "dev_run", lambda q, d, *a, **kw: (seen.append((q, d)), real(q, d, *a, **kw))[1])
    evaluator(trainer.model)
    (q, d), = seen
    search = BiEncoder(EncoderSpec(model=str(tiny_bert_dir), normalize=False, query_max_length=40,
                                   passage_max_length=16), device="cpu")  # LoRA starts as the identity
    np.testing.assert_allclose(q, search.encode_queries([evaluator.dev.queries[x] for x in evaluator.qids]),
                               atol=1e-5)
    np.testing.assert_allclose(d, search.encode_passages([evaluator.dev.corpus[x] for x in evaluator.docids]),
                               atol=1e-5)


def test_no_dev_queries_trains_without_evaluation_and_keeps_the_last_step(synthetic_beir: Path, tiny_bert_dir: Path,
                                                                          tmp_path: Path) -> None:
    """--dev-queries 0 is a natural choice for a short run: no dev split, no evaluation, the last step's weights."""
    import torch

    out = tmp_path / "nodev"
    s = train_retriever(_cfg(synthetic_beir, tiny_bert_dir, out, dev_queries=0))
    assert s["steps"] == 12 and s["dev_queries"] == 0 and s["dev_corpus"] == 0
    assert s["best_dev"] is None and s["dev_metric"] is None and s["selection"] == "last step (no dev queries)"
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert not any(k.startswith("eval_") for r in rows for k in r)
    last = load_file(str(out / "checkpoints" / "checkpoint-12" / "adapter" / "tuning_weights.safetensors"))
    kept = load_file(str(out / "adapter" / "tuning_weights.safetensors"))
    assert last.keys() == kept.keys() and all(torch.equal(last[k], kept[k]) for k in kept)


def test_trains_from_a_local_datasets_folder_in_tevatron_schema(tevatron_hf_dir: Path, synthetic_beir: Path,
                                                                tiny_bert_dir: Path, tmp_path: Path) -> None:
    """`--train hf:<folder written by save_to_disk>`: two steps, offline, the Tevatron rows' own hard negatives."""
    from peft_ir.cli import main
    from peft_ir.data import BeirDataset

    out = tmp_path / "run"
    args = _cli(Path(f"hf:{tevatron_hf_dir}:train"), tiny_bert_dir, out)[3:]  # the CLI's argv, without python -m
    args[args.index("--max-steps") + 1], args[args.index("--num-negatives") + 1] = "2", "1"
    assert main(args) == 0
    s = json.loads((out / "summary.json").read_text())
    n_train = len(BeirDataset(synthetic_beir, "train").qrels())
    assert s["steps"] == 2 and s["train_examples"] == n_train - 8  # every row but the 8 dev queries, one positive each
    assert s["config"]["train"] == f"hf:{tevatron_hf_dir}:train"
    assert (out / "adapter").is_dir()
@pytest.mark.parametrize("loss, module", [("margin-mse", "MarginMSELoss"), ("kl", "DistillKLDivLoss")])
def test_distillation_on_a_scored_file_lowers_the_loss(loss: str, module: str, synthetic_scored: Path,
                                                       tiny_bert_dir: Path, tmp_path: Path) -> None:
    """Each row carries the teacher's scores of its positive and sampled negatives; the student learns them."""
    out = tmp_path / loss
    s = train_retriever(_cfg(synthetic_scored, tiny_bert_dir, out, loss=loss, num_negatives=3, max_steps=25,
                             logging_steps=1, save_steps=25, dev_queries=0, lr=2e-2, warmup_ratio=0.0))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert s["steps"] == 25 and s["loss"] == module and s["config"]["loss"] == loss and len(losses) == 25
    assert all(0 <= x < float("inf") for x in losses)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5  # 5 steps are one pass over the 40 queries
    assert last < 0.8 * first, losses


def test_a_negative_that_is_also_a_positive_is_never_drawn() -> None:
    # a file may list a query's positive among its negatives too: trained against, it would push the positive away
    from peft_ir.data.training import TrainingExample
    from peft_ir.retriever.train import _dataset

    clean = TrainingExample("q1", ["p1"], ["n1", "n2", "n3"], "q1", [9.0], [1.0, 2.0, 3.0])
    mixed = TrainingExample("q2", ["p2", "p2b"], ["p2b", "m1", "p2", "m2"], "q2", [9.0, 8.0], [8.0, 1.0, 9.0, 2.0])
    rows = _dataset([clean, mixed], num_negatives=2, seed=0, teacher=True)
    for row in rows:
        negs = [row["negative_1"], row["negative_2"]]
        assert not {"p2", "p2b"} & set(negs)
        if row["query"] == "q2":
            assert sorted(negs) == ["m1", "m2"]
            assert row["label"][1:] == [{"m1": 1.0, "m2": 2.0}[n] for n in negs]  # scores follow their passages
    # with two eligible negatives q2 cannot give three: it is skipped, not padded with its own positives
    assert [r["query"] for r in _dataset([clean, mixed], num_negatives=3, seed=0)] == ["q1"]
