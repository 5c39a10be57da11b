"""Which device each process uses, what it says about it, and how it is installed (issue #20, items 1, 5, 7, 9).

No GPU here: torch.cuda and the NVIDIA driver probe are monkeypatched; the Makefile is read with `make -n`."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from peft_ir.errors import PeftIRError

REPO = Path(__file__).resolve().parents[2]
DRIVER_GPUS = ["GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-1)", "GPU 1: NVIDIA A100-SXM4-80GB (UUID: GPU-2)"]


def _gpus(monkeypatch: pytest.MonkeyPatch, n: int, *, driver: int | None = None) -> list[int]:
    """Make torch see `n` GPUs (0: none) and the driver `driver` (default: n); returns the set_device calls."""
    import peft_ir.devices as devices

    calls: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(torch.device(d).index if not
                                                                          isinstance(d, int) else d))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA A100-SXM4-80GB")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(devices, "driver_gpus", lambda: DRIVER_GPUS[:n if driver is None else driver])
    for var in ("CUDA_VISIBLE_DEVICES", "LOCAL_RANK", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    return calls


# --- item 1: install and the driver/torch mismatch ------------------------------------------------------------

def _make_n(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    return subprocess.run(["make", "-n", "-C", str(REPO), f"VENV={tmp_path / 'venv'}", *args], capture_output=True,
                          text=True)


@pytest.mark.parametrize("flavour", ["cu126", "cu128", "cu130", "cpu"])
def test_makefile_torch_flavour_installs_that_build_before_the_package(tmp_path: Path, flavour: str) -> None:
    done = _make_n(tmp_path, "install", f"TORCH={flavour}")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    torch_line = next(i for i, x in enumerate(lines) if "download.pytorch.org" in x)
    assert f"--index-url https://download.pytorch.org/whl/{flavour}" in lines[torch_line]
    assert f"torch==2.13.0+{flavour}" in lines[torch_line]  # the pyproject pin, this build (forces a switch)
    package = next(i for i, x in enumerate(lines) if "install" in x and "-e" in x)
    assert torch_line < package  # the package's torch==2.13.0 is then already met by this build


def test_makefile_default_keeps_pypis_torch(tmp_path: Path) -> None:
    done = _make_n(tmp_path, "install")
    assert done.returncode == 0, done.stderr
    assert "download.pytorch.org" not in done.stdout and "-e" in done.stdout


def test_makefile_refuses_an_unknown_torch_flavour(tmp_path: Path) -> None:
    done = _make_n(tmp_path, "install", "TORCH=cuda12")
    assert done.returncode != 0 and "TORCH" in done.stderr and "cu126" in done.stderr


def test_gpus_the_driver_sees_but_torch_cannot_use_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """PyPI's CUDA 13 torch on an older driver: torch sees no GPU while nvidia-smi lists two. Refuse, say why."""
    from peft_ir.devices import device_for_process
    from peft_ir.retriever.config import EncoderSpec
    from peft_ir.retriever.encoder import BiEncoder

    _gpus(monkeypatch, 0, driver=2)
    with pytest.raises(PeftIRError, match=r"2 GPU.*driver.*torch.*TORCH=cu126.*--device cpu"):
        device_for_process()
    with pytest.raises(PeftIRError, match="TORCH=cu126"):
        BiEncoder(EncoderSpec())  # every stage that picks its own device refuses alike
    assert device_for_process("cpu") == "cpu"               # asked for the CPU: no complaint
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert device_for_process() == "cpu"                    # GPUs hidden on purpose: no complaint
    with pytest.raises(PeftIRError, match="no GPU"):
        device_for_process("cuda")                          # asked for one that is not there


def test_driver_probe_reads_nvidia_smi(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import peft_ir.devices as devices

    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\n[ \"$1\" = -L ] && printf 'GPU 0: NVIDIA L4 (UUID: GPU-x)\\n'\n")
    fake.chmod(0o755)
    monkeypatch.setattr(devices, "PROC_GPUS", tmp_path / "absent")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert devices.driver_gpus() == ["GPU 0: NVIDIA L4 (UUID: GPU-x)"]
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert devices.driver_gpus() == []                      # no driver: nothing to complain about


def test_each_stage_says_which_device_it_runs_on(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                                 tiny_bert_dir: Path, synthetic_beir: Path, tmp_path: Path) -> None:
    from peft_ir.data import iter_documents
    from peft_ir.devices import describe_device
    from peft_ir.reranker.config import CrossEncoderSpec
    from peft_ir.reranker.model import CrossEncoder
    from peft_ir.reranker.rerank import rerank
    from peft_ir.retriever.encode import encode_corpus
    from peft_ir.retriever.encoder import BiEncoder
    from peft_ir.retriever.config import EncoderSpec

    caplog.set_level(logging.INFO, logger="peft_ir")
    encoder = BiEncoder(EncoderSpec(model=str(tiny_bert_dir), passage_max_length=16), device="cpu")
    encode_corpus(encoder, iter_documents(synthetic_beir), tmp_path / "emb", progress=False)
    ce = CrossEncoder(CrossEncoderSpec(model=str(tiny_bert_dir), query_max_length=8, passage_max_length=16),
                      device="cpu")
    rerank({"q": {"a": 1.0, "b": 0.5}}, {"q": "a query"}, {"a": "one passage", "b": "another"}, ce)
    assert "encoding on cpu" in caplog.text and "re-ranking on cpu" in caplog.text

    _gpus(monkeypatch, 1)
    assert describe_device("cuda:0") == "cuda:0 (NVIDIA A100-SXM4-80GB)"
    assert describe_device(torch.device("cuda")) == "cuda:0 (NVIDIA A100-SXM4-80GB)"


# --- item 5: one device per process -----------------------------------------------------------------------------

def test_device_for_process_follows_local_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    from peft_ir.devices import device_for_process

    calls = _gpus(monkeypatch, 2)
    assert device_for_process() == "cuda"
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert device_for_process() == "cuda:1" and calls == [1]  # set as the current device, so nothing lands on GPU 0
    assert device_for_process("cuda") == "cuda:1"
    assert device_for_process("cuda:0") == "cuda:0"        # an explicit index wins
    assert device_for_process("cpu") == "cpu"
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(PeftIRError, match="LOCAL_RANK 2.*2 GPU"):
        device_for_process()
    with pytest.raises(PeftIRError, match="cuda:5"):
        device_for_process("cuda:5")
    _gpus(monkeypatch, 0)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert device_for_process() == "cpu"                   # torchrun on CPU (gloo)


class _Stop(Exception):
    pass


@pytest.mark.parametrize("stage", ["retriever", "reranker"])
def test_trainers_build_each_ranks_model_on_its_own_gpu(stage: str, monkeypatch: pytest.MonkeyPatch,
                                                        synthetic_beir: Path, synthetic_runs: dict,
                                                        tmp_path: Path) -> None:
    """Under torchrun rank 1 builds its model on cuda:1, not on GPU 0 before the Trainer moves it."""
    import peft_ir.reranker.training as reranker_training
    import peft_ir.retriever.train as retriever_train
    from peft_ir.reranker.config import RerankerTrainConfig
    from peft_ir.retriever.config import RetrieverTrainConfig

    _gpus(monkeypatch, 2)
    for var, value in (("WORLD_SIZE", "2"), ("RANK", "1"), ("LOCAL_RANK", "1")):
        monkeypatch.setenv(var, value)
    seen: list[str] = []

    def spy(*args, device=None, **kw):  # type: ignore[no-untyped-def]
        seen.append(device)
        raise _Stop

    if stage == "retriever":
        monkeypatch.setattr(retriever_train, "BiEncoder", spy)
        with pytest.raises(_Stop):
            retriever_train.train_retriever(RetrieverTrainConfig(train=str(synthetic_beir), output=str(tmp_path / "r"),
                                                                 dev_queries=4, num_negatives=0))
    else:
        monkeypatch.setattr(reranker_training, "CrossEncoder", spy)
        with pytest.raises(_Stop):
            reranker_training.train_reranker(RerankerTrainConfig(
                train=str(synthetic_beir), output=str(tmp_path / "c"), negatives_run=str(synthetic_runs["train"]),
                negatives_window=(1, 20), dev_queries=4))
    assert seen == ["cuda:1"]


def _encode_args(beir: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return ["encode", "--corpus", str(beir), "--output", str(out), "--model", str(model), "--passage-max-length",
            "16", "--chunk-size", "20", "--batch-size", "8", *extra]


def test_encode_takes_its_shard_from_rank_and_world_size(monkeypatch: pytest.MonkeyPatch, synthetic_beir: Path,
                                                        tiny_bert_dir: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    """`torchrun --nproc_per_node 2 -m peft_ir.cli encode ...`: rank 1 encodes shard 1 of 2 (the 60 documents are
    3 chunks of 20: rank 1 owns chunk 1 only)."""
    from peft_ir.cli import main

    _gpus(monkeypatch, 0)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert main(_encode_args(synthetic_beir, tiny_bert_dir, tmp_path / "emb")) == 0
    chunks = sorted(p.name for p in (tmp_path / "emb" / "chunks").glob("chunk-*.npz"))
    assert chunks == ["chunk-000001.npz"] and "shard 1/2" in capsys.readouterr().out
    assert main(_encode_args(synthetic_beir, tiny_bert_dir, tmp_path / "emb", "--shard-id", "0")) == 0  # flags win
    assert (tmp_path / "emb" / "chunks" / "chunk-000002.npz").is_file()


@pytest.mark.parametrize("command", ["encode", "rerank"])
def test_encode_and_rerank_take_a_device(command: str, monkeypatch: pytest.MonkeyPatch, synthetic_beir: Path,
                                         synthetic_runs: dict, tiny_bert_dir: Path, tmp_path: Path) -> None:
    import peft_ir.reranker.model as reranker_model
    import peft_ir.retriever.encoder as retriever
    from peft_ir.cli import main

    seen: list[str] = []

    def spy(*args, device=None, **kw):  # type: ignore[no-untyped-def]
        seen.append(device)
        raise _Stop

    monkeypatch.setattr(retriever, "BiEncoder", spy)
    monkeypatch.setattr(reranker_model, "CrossEncoder", spy)
    args = (_encode_args(synthetic_beir, tiny_bert_dir, tmp_path / "emb") if command == "encode" else
            ["rerank", "--run", str(synthetic_runs["test"]), "--topics", str(synthetic_beir), "--corpus",
             str(synthetic_beir), "--model", str(tiny_bert_dir), "--output", str(tmp_path / "r.trec")])
    _gpus(monkeypatch, 2)
    for device, expected in (("cuda:1", "cuda:1"), ("cpu", "cpu"), ("auto", "cuda")):
        with pytest.raises(_Stop):
            main([*args, "--device", device])
        assert seen.pop() == expected
    _gpus(monkeypatch, 0, driver=2)                        # driver/torch mismatch: --device cpu still runs
    with pytest.raises(_Stop):
        main([*args, "--device", "cpu"])
    assert seen.pop() == "cpu"
    assert main([*args, "--device", "auto"]) == 2 and not seen  # refused with the message, before loading
    with pytest.raises(SystemExit):
        main([*args, "--device", "gpu"])


# --- item 7: data loading on CUDA ---------------------------------------------------------------------------

def test_trainer_data_loading_uses_workers_and_pinned_memory_on_cuda_only(monkeypatch: pytest.MonkeyPatch,
                                                                           tmp_path: Path) -> None:
    from peft_ir.training.args import ScheduleConfig, common_trainer_args

    cfg = ScheduleConfig(train="x", output=str(tmp_path))
    _gpus(monkeypatch, 0)
    cpu = common_trainer_args(cfg, tmp_path, "eval_m")
    assert cpu["dataloader_num_workers"] == 0 and cpu["dataloader_pin_memory"] is False  # CPU results unchanged
    _gpus(monkeypatch, 1)
    monkeypatch.setattr("peft_ir.training.args.usable_cpus", lambda: 16)
    gpu = common_trainer_args(cfg, tmp_path, "eval_m")
    assert gpu["dataloader_num_workers"] >= 2 and gpu["dataloader_pin_memory"] is True
    assert gpu["dataloader_persistent_workers"] is True
    monkeypatch.setattr("peft_ir.training.args.usable_cpus", lambda: 2)
    assert common_trainer_args(cfg, tmp_path, "eval_m")["dataloader_num_workers"] <= 1  # leaves the main process a core


# --- item 9: the exact-comparison tests stay on the CPU on a GPU box ------------------------------------------

def test_ddp_and_resume_tests_launch_on_gloo_and_cpu_where_cuda_is_visible(monkeypatch: pytest.MonkeyPatch,
                                                                          tmp_path: Path) -> None:
    """On a GPU box, torch sees CUDA unless the launch hides it; the tests' environment hides it, so the 2-process
    test gets gloo on CPU (NCCL would need one GPU per rank) and resumed runs compare CPU against CPU."""
    import os

    from cpu_only import cpu_env

    from peft_ir.training.args import ScheduleConfig, common_trainer_args

    monkeypatch.setattr(torch.cuda, "is_available", lambda: os.environ.get("CUDA_VISIBLE_DEVICES") != "")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0 if os.environ.get("CUDA_VISIBLE_DEVICES") == "" else 1)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = ScheduleConfig(train="x", output=str(tmp_path))
    assert common_trainer_args(cfg, tmp_path, "m")["ddp_backend"] is None  # what a bare launch would get: NCCL
    for key, value in cpu_env(WORLD_SIZE="2").items():
        monkeypatch.setenv(key, value)
    args = common_trainer_args(cfg, tmp_path, "m")
    assert args["ddp_backend"] == "gloo" and args["use_cpu"] is True
    source = {p: (REPO / "tests" / p).read_text() for p in ("retriever/test_train.py", "retriever/test_encode_kill.py",
                                                           "reliability/kills.py")}
    for path, text in source.items():
        assert "cpu_env(" in text and "dict(os.environ" not in text, path  # every subprocess launch uses it


@pytest.mark.parametrize("outcome", ["done", "error"])
def test_the_cli_closes_the_process_group_a_stage_opened(outcome: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A torchrun rank that exits with transformers' process group still open can abort in the interpreter's
    teardown after its work is done (gloo's threads), failing the run: the CLI closes the group on every exit."""
    import torch.distributed as dist

    import peft_ir.cli.eval as eval_cli
    from peft_ir.cli import main

    def stage(args: object) -> int:  # stands in for a command whose training opened the group
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
        if outcome == "error":
            raise PeftIRError("bad input")
        return 0

    monkeypatch.setattr(eval_cli, "run_eval", stage)
    try:
        code = main(["eval", "--qrels", "q", "--run", "r"])
        assert code == (0 if outcome == "done" else 2)
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
