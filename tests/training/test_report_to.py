"""Experiment tracking (`report_to`): TensorBoard event files in the run folder, read back; nothing by default; the
same weights either way; bad values and missing packages refused before any work, naming the key and its line."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from peft_ir.cli import build_parser
from peft_ir.errors import PeftIRError
from peft_ir.experiment import ConfigError, load_config
from peft_ir.retriever.config import RetrieverTrainConfig
from peft_ir.retriever.train import train_retriever
from peft_ir.training.args import common_trainer_args
from tiny_train import retriever_config


def _cfg(data: Path, model: Path, out: Path, **kw) -> RetrieverTrainConfig:  # type: ignore[no-untyped-def]
    return retriever_config(data, model, out, **{"max_steps": 4, "eval_steps": 2, "save_steps": 2, "logging_steps": 1,
                                                 **kw})


def _events(folder: Path) -> list[Path]:
    return sorted(folder.rglob("events.out.tfevents.*"))


def test_tensorboard_events_land_in_the_run_folder_and_training_is_unchanged(
        synthetic_beir: Path, tiny_bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)  # where a writer opened without a folder would put runs/
    plain = train_retriever(_cfg(synthetic_beir, tiny_bert_dir, tmp_path / "plain"))
    assert not _events(tmp_path)  # the default reports nowhere

    out = tmp_path / "tracked"
    s = train_retriever(_cfg(synthetic_beir, tiny_bert_dir, out, report_to=["tensorboard"]))
    assert _events(tmp_path) and all(p.is_relative_to(out / "tensorboard") for p in _events(tmp_path))

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = {r["step"]: r["loss"] for r in rows if "loss" in r}
    logged = {e.step: e.value for e in events.Scalars("train/loss")}
    assert set(logged) == set(losses) and all(logged[k] == pytest.approx(v, rel=1e-6) for k, v in losses.items())
    dev = "eval/" + s["dev_metric"].removeprefix("eval_")
    assert dev in scalars and [e.step for e in events.Scalars(dev)] == [r["step"] for r in rows if s["dev_metric"] in r]

    assert s["steps"] == plain["steps"] and s["best_checkpoint"].endswith(Path(plain["best_checkpoint"]).name)
    a, b = (load_file(next((tmp_path / name / "adapter").glob("*.safetensors"))) for name in ("plain", "tracked"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)  # logging does not change training


def test_report_to_reaches_the_trainer_and_none_means_none(tmp_path: Path) -> None:
    cfg = _cfg(Path("t"), Path("m"), tmp_path)
    assert cfg.report_to == [] and common_trainer_args(cfg, tmp_path, "m")["report_to"] == []
    for given, passed in ((["none"], []), (["tensorboard"], ["tensorboard"])):
        cfg.report_to = given
        assert common_trainer_args(cfg, tmp_path, "m")["report_to"] == passed
    cfg.report_to = ["none", "tensorboard"]
    with pytest.raises(PeftIRError, match="'none' turns tracking off"):
        cfg.check()


def test_report_to_flag_takes_the_trackers_only() -> None:
    parser = build_parser()
    base = ["train", "retriever", "--train", "t", "--output", "o"]
    assert parser.parse_args(base).report_to == []
    assert parser.parse_args([*base, "--report-to", "tensorboard", "mlflow"]).report_to == ["tensorboard", "mlflow"]
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--report-to", "tensorbord"])


def _without(*packages: str):  # type: ignore[no-untyped-def]
    real = importlib.util.find_spec

    def find_spec(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None if name in packages else real(name, *args, **kwargs)
    return find_spec


@pytest.mark.parametrize("tracker", ["wandb", "mlflow"])
def test_a_tracker_not_installed_is_refused_before_any_work(tracker: str, synthetic_beir: Path, tiny_bert_dir: Path,
                                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", _without(tracker))
    out = tmp_path / "run"
    with pytest.raises(PeftIRError, match=rf"needs the {tracker} package, which is not installed: "
                                          rf"pip install {tracker}"):
        train_retriever(_cfg(synthetic_beir, tiny_bert_dir, out, report_to=["tensorboard", tracker]))
    assert not out.exists()  # refused before the run folder, the data or the model

    path = _yaml(tmp_path / "exp.yaml", synthetic_beir, tiny_bert_dir, [tracker])
    with pytest.raises(ConfigError, match=rf"{path}:{_line(path, 'report_to:')}: 'retriever.report_to': .*pip install "
                                          rf"{tracker}"):
        load_config(path)
    load_config(path, check_files=False)  # `--check` on another machine: the config itself is sound


def _yaml(path: Path, beir: Path, model: Path, report_to: list[str]) -> Path:
    retriever = {"model": str(model), "method": "iaa-l", "num_negatives": 0, "max_steps": 2, "report_to": report_to}
    path.write_text(yaml.safe_dump({"name": "tracked", "output": str(path.parent / "runs"), "data": {"beir": str(beir)},
                                    "retriever": retriever}, sort_keys=False, default_flow_style=False))
    return path


def _line(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


@pytest.mark.parametrize("report_to, message", [
    (["tensorbord"], r"'retriever.report_to\[0\]': expected one of tensorboard, wandb, mlflow, none, got 'tensorbord'"
                     r".*did you mean 'tensorboard'\?"),
    (["none", "tensorboard"], r"'retriever.report_to': 'none' turns tracking off and cannot be combined with "
                              r"tensorboard"),
])
def test_bad_report_to_in_yaml_names_the_key_and_line(report_to: list[str], message: str, synthetic_beir: Path,
                                                      tiny_bert_dir: Path, tmp_path: Path) -> None:
    path = _yaml(tmp_path / "exp.yaml", synthetic_beir, tiny_bert_dir, report_to)
    line = _line(path, f"- {report_to[0]}")
    if report_to[0] == "none":
        line = _line(path, "report_to:")
    with pytest.raises(ConfigError, match=rf"{path}:{line}: {message}"):
        load_config(path, check_files=False)


def test_yaml_report_to_reaches_the_training_config(synthetic_beir: Path, tiny_bert_dir: Path, tmp_path: Path) -> None:
    from peft_ir.experiment.pipeline import Pipeline

    cfg = load_config(_yaml(tmp_path / "exp.yaml", synthetic_beir, tiny_bert_dir, ["tensorboard"]))
    assert cfg.retriever is not None and cfg.retriever.report_to == ["tensorboard"]
    pipeline = Pipeline(cfg, progress=False, echo=lambda line: None)
    train = pipeline._train_config(RetrieverTrainConfig, cfg.retriever, pipeline.dir.retriever)
    assert train.report_to == ["tensorboard"] and Path(train.output).is_relative_to(pipeline.dir.root)


def test_wandb_and_mlflow_write_in_the_run_folder_and_a_users_setting_is_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from peft_ir.training import tracking

    for var in ("WANDB_DIR", "MLFLOW_TRACKING_URI"):  # set, then deleted: recorded, so the test's own values go too
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    monkeypatch.setattr(tracking, "_pointed", {})
    tracking.point_local_files(["tensorboard"], tmp_path / "a")  # nothing else asked: nothing set
    assert "WANDB_DIR" not in os.environ and "MLFLOW_TRACKING_URI" not in os.environ
    first, second = tmp_path / "retriever", tmp_path / "reranker"
    tracking.point_local_files(["wandb", "mlflow"], first)
    assert os.environ["WANDB_DIR"] == str(first / "wandb") and (first / "wandb").is_dir()
    assert os.environ["MLFLOW_TRACKING_URI"] == (first / "mlruns").resolve().as_uri()
    # the next training of the same process (a run's re-ranker after its retriever) moves what we set ...
    tracking.point_local_files(["wandb", "mlflow"], second)
    assert os.environ["WANDB_DIR"] == str(second / "wandb")
    assert os.environ["MLFLOW_TRACKING_URI"] == (second / "mlruns").resolve().as_uri()
    # ... but never what the user set
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    tracking.point_local_files(["mlflow"], first)
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://tracking.example:5000"
