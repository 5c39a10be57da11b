"""Every committed config under configs/ loads and validates (nothing runs), so none can rot unnoticed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from peft_ir.experiment import load_config
from peft_ir.experiment.pipeline import Pipeline

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
SHARED_DATA = REPO.parent / "shared" / "data"
ALL = sorted(CONFIGS.rglob("*.yaml"))
# configs/paper pins the sizes the paper publishes (Ma et al. 2022, IAA-L) instead of a budget: stem -> (sizes,
# share of BERT-base in % by our count)
PAPER_SIZES = {"iaa-l-0.5": ({"r": 12, "ar": 12}, 0.63), "iaa-l-6.7": ({"r": 50, "ar": 300}, 6.76)}


def _id(path: Path) -> str:
    return str(path.relative_to(CONFIGS))


def _inputs_at_hand(path: Path, overrides: list[str]) -> bool:
    """The embedded SciFact is always here, ../shared/data only beside the development checkout, the paper's
    MS MARCO files (and bert-base-uncased) only where someone fetched them, a teacher that is another config's trained
    model (under runs/) only where that config has run."""
    suite = path.relative_to(CONFIGS).parts[0]
    teacher = load_config(path, overrides, check_files=False).teacher
    folder = (REPO / teacher.teacher).resolve() if teacher is not None and teacher.teacher else None
    from_a_run = folder is not None and REPO / "runs" in folder.parents
    return suite != "paper" and (suite != "msmarco" or SHARED_DATA.is_dir()) and (not from_a_run or folder.is_dir())


# Configs written by hand beside the generated ones (configs/generate.py), each with its own expect: block once it
# has been run (NOT_YET_RUN: recipes whose numbers are still to be measured and written in).
HAND_WRITTEN = {("scifact", "retrieval"): {"hybrid-zero-shot", "iaa-l-0.5-kl", "iaa-l-0.5-kl-hybrid", "full-kl",
                                          "lora-0.5-kl", "adapter-0.5-kl", "iaa-l-0.5-900", "iaa-l-0.5-900-hybrid",
                                          "full-900", "lora-0.5-900", "adapter-0.5-900"},
                ("scifact", "rerank"): {"iaa-l-0.5-cosine", "iaa-l-0.5-cosine-kl", "lora-0.5-cosine",
                                        "adapter-0.5-cosine", "full-cosine", "iaa-l-0.5-cosine-960",
                                        "iaa-l-0.5-cosine-960-kl-full", "iaa-l-0.5-cosine-960-kl-full-t2",
                                        "iaa-l-0.5-cosine-960-kl-full-seed1", "iaa-l-0.5-cosine-960-kl-full-seed2",
                                        "lora-0.5-cosine-960-kl-full", "lora-0.5-cosine-960-kl-full-seed1",
                                        "lora-0.5-cosine-960-kl-full-seed2", "adapter-0.5-cosine-960-kl-full",
                                        "adapter-0.5-cosine-960-kl-full-seed1", "adapter-0.5-cosine-960-kl-full-seed2",
                                        "full-cosine-960-kl-full", "full-cosine-960-kl-full-seed1",
                                        "full-cosine-960-kl-full-seed2", "iaa-l-0.5-cosine-960-kl-full-p220",
                                        "iaa-l-0.5-gated"},
                ("scifact", "pipeline"): {"iaa-l-0.5-900-hybrid-cosine-960"},
                ("msmarco", "retrieval"): {"iaa-l-0.5-kl"},
                ("msmarco", "rerank"): {"iaa-l-0.5-cosine", "iaa-l-0.5-cosine-600", "iaa-l-0.5-cosine-kl",
                                        "iaa-l-0.5-cosine-kl-600", "iaa-l-0.5-cosine-kl-600-fused", "iaa-l-0.5-gated"}}
NOT_YET_RUN: set[tuple[str, str, str]] = set()  # (suite, task, stem)


def test_there_is_one_config_per_method_budget_and_task() -> None:
    for suite in ("scifact", "msmarco", "paper"):
        for task in ("retrieval", "rerank"):
            names = {p.stem for p in (CONFIGS / suite / task).glob("*.yaml")}
            expected = {"full", "bitfit"} | {f"{m}-{b}" for m in ("prefix", "adapter", "lora", "mam", "iaa-s",
                                                                  "iaa-l", "iaa-m") for b in ("0.5", "6.7")}
            expected |= {"zero-shot"} if task == "retrieval" else set()
            assert names == expected | HAND_WRITTEN.get((suite, task), set()), (suite, task)
            assert (CONFIGS / suite / f"base-{task}.yaml").is_file()


def test_generated_configs_are_up_to_date() -> None:
    done = subprocess.run([sys.executable, str(CONFIGS / "generate.py"), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("path", ALL, ids=_id)
def test_config_validates(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # relative paths in the committed configs are relative to the repository root
    overrides = []
    if path.name.startswith("base-"):  # bases leave the method to the files that extend them
        overrides = [f"{'reranker' if 'rerank' in path.name else 'retriever'}.method=full"]
    cfg = load_config(path, overrides, check_files=_inputs_at_hand(path, overrides))
    if path.stem in HAND_WRITTEN.get((path.parts[-3], path.parent.name), set()):
        assert cfg.name == path.stem  # named by its file, and carries the numbers it produced
        assert bool(cfg.expect) != ((path.parts[-3], path.parent.name, path.stem) in NOT_YET_RUN)
        return
    assert len(path.read_text().splitlines()) <= 6 or path.parent == CONFIGS or path.name.startswith("base-")
    if path.parent.name in ("retrieval", "rerank"):
        assert cfg.name == path.stem
        assert cfg.output.endswith(f"runs/{path.parent.parent.name}/{path.parent.name}")
        section = cfg.retriever if path.parent.name == "retrieval" else cfg.reranker
        assert section is not None
        budgeted = path.stem not in ("zero-shot", "full", "bitfit")
        assert section.zero_shot if path.stem == "zero-shot" else section.method == path.stem.rsplit("-", 1)[0] \
            if budgeted else section.method == path.stem
        pinned = path.parts[-3] == "paper" and path.stem in PAPER_SIZES
        assert bool(section.budget) == (budgeted and not pinned)
        if section.budget:
            assert section.budget == path.stem.rsplit("-", 1)[1] + "%"


@pytest.mark.parametrize("path", [p for p in ALL if p.parts[-3] == "paper" and p.stem not in ("full", "bitfit",
                                                                                               "zero-shot")],
                         ids=_id)
def test_paper_budgets_are_reachable_on_bert_base(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bert-base-uncased is not at hand offline: check the budgets on BERT-base's structure (meta device)."""
    import torch
    import transformers

    from peft_ir.tuning import TuningConfig, budget_config, parse_share, trainable_parameters
    from peft_ir.tuning.budget import count
    from peft_ir.tuning.arch import detect

    monkeypatch.chdir(REPO)
    cfg = load_config(path, check_files=False)
    section = cfg.retriever or cfg.reranker
    assert section is not None and section.model == "bert-base-uncased"
    auto = transformers.AutoModelForSequenceClassification if cfg.reranker else transformers.AutoModel
    with torch.device("meta"):
        model = auto.from_config(transformers.BertConfig(num_labels=1))
    if path.stem in PAPER_SIZES:  # the paper's own sizes, as given (0.63 % for its "0.5 %")
        tuning = TuningConfig(method=section.method, **section.tuning)
        assert section.budget is None and section.tuning == PAPER_SIZES[path.stem][0]
        share, nominal = count(detect(model), tuning) / trainable_parameters(model)[1], PAPER_SIZES[path.stem][1]
        assert round(100 * share, 2) == nominal
        return
    tuning = budget_config(model, section.method, section.budget, **section.tuning)
    share = count(detect(model), tuning) / trainable_parameters(model)[1]
    assert share == pytest.approx(parse_share(section.budget), rel=0.25)


def test_the_distilled_recipe_plans_the_pilot(monkeypatch: pytest.MonkeyPatch) -> None:
    """configs/scifact/retrieval/iaa-l-0.5-kl.yaml is results/distill-pilot.md's section 4 in one file."""
    monkeypatch.chdir(REPO)
    cfg = load_config(CONFIGS / "scifact" / "retrieval" / "iaa-l-0.5-kl.yaml")
    t, r = cfg.teacher, cfg.retriever
    assert t is not None and r is not None
    assert (t.teacher, t.teacher_weights, t.candidates, t.depth, t.hits) == ("fusion:dense,bm25", [10.0, 10.0],
                                                                             "fused", 20, 100)
    assert (r.method, r.budget, r.loss, r.negatives, r.num_negatives) == ("iaa-l", "0.5%", "kl", None, 3)
    assert cfg.data.train == cfg.data.beir == str(REPO / "data" / "scifact")
    titles = [s.title.split(" (")[0].split(", top")[0] for s in Pipeline(cfg).stages()]
    assert titles == ["BM25 index of the corpus", "BM25 run of the training queries",
                      "teacher: encode the corpus with the untrained start model", "teacher: index",
                      "teacher: dense search of the training queries", "teacher: fuse dense + bm25 of the training "
                      "queries", "teacher: score the top 20 of the fused run of the training queries",
                      "train retriever: iaa-l", "encode the corpus", "index", "dense search", "evaluate"]


def test_quickstart_plans_the_documented_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    cfg = load_config(CONFIGS / "quickstart.yaml")
    assert cfg.data.beir == str(REPO / "data" / "scifact")
    assert cfg.retriever.method == cfg.reranker.method == "iaa-l" and cfg.retriever.budget == cfg.reranker.budget == "0.5%"
    assert cfg.reranker.head == "cosine" and cfg.reranker.fuse_weight == "auto"
    titles = [s.title.split(":")[0].split(" (")[0] for s in Pipeline(cfg).stages()]
    assert titles == ["BM25 index of the corpus", "BM25 run of the training queries", "train retriever",
                      "encode the corpus", "index", "dense search, top 100", "train reranker", "re-rank the top 20",
                      "the re-ranker's 20 dev queries", "first stage of the dev queries", "re-rank the dev queries",
                      "choose the fusion weight on the dev queries", "fuse the re-ranker with its first stage",
                      "evaluate"]


@pytest.mark.parametrize("path", [p for p in ALL if p.relative_to(CONFIGS).parts[0] == "paper"], ids=_id)
def test_paper_configs_pass_run_check_here(path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capfd: pytest.CaptureFixture) -> None:
    """`peft-ir run --check` passes offline for every paper file: its training data is named by hf: / irds: ids, and
    what would be fetched at run time (the dataset, ir_datasets' files, bert-base-uncased) is a note, not a failure."""
    from peft_ir.cli import main
    from peft_ir.data.hf import cached_snapshot

    monkeypatch.chdir(REPO)
    section = "reranker" if "rerank" in path.name or path.parent.name == "rerank" else "retriever"
    extra = ["--set", f"{section}.method=full"] if path.name.startswith("base-") else []
    assert main(["run", str(path), "--check", *extra]) == 0
    out = capfd.readouterr().out
    train = {"retriever": "hf:Tevatron/msmarco-passage:train",
             "reranker": "irds:msmarco-passage/train/triples-small"}[section]
    assert f"train: {train}" in out
    if section == "reranker":  # ir_datasets is always a note: its files are fetched on first use
        assert f"note: data.train: {train}: " in out
    elif cached_snapshot("Tevatron/msmarco-passage") is None:
        assert f"note: data.train: {train}: Hub dataset 'Tevatron/msmarco-passage' is not in the local" in out
