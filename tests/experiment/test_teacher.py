"""A `teacher:` section: the run scores its own training queries (the untrained start model's dense run fused with
BM25, as results/distill-pilot.md did by hand) and a section that distils trains on that file; resumable, and
refused before any work when it cannot be made."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from peft_ir.cli import main
from peft_ir.data import read_run, read_training
from peft_ir.errors import PeftIRError
from peft_ir.experiment import ConfigError, load_config
from peft_ir.experiment.pipeline import Pipeline
from peft_ir.reranker.config import RerankerTrainConfig
from peft_ir.retriever.config import RetrieverTrainConfig
from tiny import stamps, tiny_config, write_yaml

FUSION = {"teacher": "fusion:dense,bm25", "teacher_weights": [10, 10], "candidates": "fused", "depth": 5, "hits": 20}
DISTIL = {"loss": "kl", "negatives": None, "num_negatives": 2}


def _config(beir: Path, model: Path, tmp: Path, **sections: Any) -> dict[str, Any]:
    """The pilot recipe on the tiny model: a KL-distilled retriever, no re-ranker."""
    return tiny_config(beir, model, tmp / "runs", name="distil",
                       **{"reranker": None, "bm25": {"threads": 1}, "teacher": FUSION, "retriever": DISTIL, **sections})


def _titles(lines: list[str], what: str) -> list[str]:
    return [line.split("] ", 1)[1].split(": " + what)[0] for line in lines if line.startswith("[") and what in line]


@pytest.fixture(scope="module")
def distil_run(tmp_path_factory: pytest.TempPathFactory, synthetic_beir: Path, tiny_bert_dir: Path) -> dict[str, Any]:
    """The recipe run three times: killed inside the teacher's scoring after its first block of queries, resumed to
    the end, and run again."""
    pytest.importorskip("pyserini", reason="BM25 needs pyserini (a declared dependency)")
    from peft_ir.teacher.annotate import BLOCK_QUERIES, partial_paths
    from peft_ir.teacher.teachers import FusionTeacher

    tmp = tmp_path_factory.mktemp("teacher")
    path = write_yaml(tmp / "distil.yaml", _config(synthetic_beir, tiny_bert_dir, tmp))
    calls = {"n": 0}
    score = FusionTeacher.score

    def dies_after_one_block(self: FusionTeacher, blocks: Any) -> list[list[float]]:
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyboardInterrupt  # as a kill: nothing after the first block is written
        return score(self, blocks)

    killed: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(FusionTeacher, "score", dies_after_one_block)
        pipeline = Pipeline(load_config(path), progress=False, echo=killed.append)
        with pytest.raises(KeyboardInterrupt):
            pipeline.run()
    root = pipeline.dir.root
    partial, _ = partial_paths(root / "teacher" / "train.scored.jsonl")
    after_kill = {"partial_lines": partial.read_bytes().count(b"\n"), "block": BLOCK_QUERIES,
                  "stages": {s.title: s.done() for s in pipeline.stages()}, "files": stamps(root)}
    resumed: list[str] = []
    metrics = Pipeline(load_config(path), progress=False, echo=resumed.append).run()
    return {"config": path, "root": root, "killed": killed, "after_kill": after_kill, "resumed": resumed,
            "metrics": metrics}


def test_a_killed_teacher_stage_is_not_done_until_its_file_is_complete(distil_run: dict[str, Any]) -> None:
    k = distil_run["after_kill"]
    assert distil_run["killed"][-1].startswith("[7/12] teacher: score the top 5")  # killed inside that stage
    assert k["partial_lines"] == k["block"]  # one block of queries scored, in the partial file
    done = {title.split(" (")[0].split(", top")[0]: ok for title, ok in k["stages"].items()}
    assert done["teacher: score the top 5 of the fused run of the training queries"] is False
    assert not {"teacher/train.scored.jsonl", "teacher/train.scored.jsonl.teacher.json"} & set(k["files"])
    for title in ("BM25 index of the corpus", "BM25 run of the training queries", "teacher: encode the corpus with "
                  "the untrained start model", "teacher: index", "teacher: dense search of the training queries",
                  "teacher: fuse dense + bm25 of the training queries"):
        assert done[title] is True, title
    assert done["train retriever: iaa-l"] is False


def test_the_run_resumes_inside_the_teacher_stage_and_trains_on_its_file(distil_run: dict[str, Any],
                                                                          tmp_path: Path) -> None:
    from peft_ir.teacher.annotate import annotate
    from peft_ir.teacher.config import AnnotateConfig, TeacherConfig

    root, lines = distil_run["root"], distil_run["resumed"]
    assert _titles(lines, "already done") == [
        "BM25 index of the corpus", "BM25 run of the training queries (the teacher's)",
        "teacher: encode the corpus with the untrained start model (max length 32)", "teacher: index (FAISS Flat)",
        "teacher: dense search of the training queries, top 20", "teacher: fuse dense + bm25 of the training queries "
        "(interpolate)"]
    assert any("40 queries scored by the fusion teacher, resumed after 16" in line for line in lines), lines
    scored = root / "teacher" / "train.scored.jsonl"
    dense, bm25 = root / "teacher" / "train.dense.trec", root / "runs" / "train.bm25.trec"
    # the resumed file is byte for byte what one uninterrupted annotation of the same inputs writes
    fresh = tmp_path / "fresh.jsonl"
    annotate(AnnotateConfig(dataset=load_config(distil_run["config"]).data.train, split="train",
                            run=str(root / "teacher" / "train.fused.trec"), depth=5, output=str(fresh),
                            scorer=TeacherConfig(teacher=f"fusion:{dense},{bm25}", teacher_weights=[10, 10]),
                            progress=False))
    assert scored.read_bytes() == fresh.read_bytes()
    # its record names the teacher: the start model's dense run and BM25's, weighted 10 and 10
    record = json.loads((root / "teacher" / "train.scored.jsonl.teacher.json").read_text())
    assert record["teacher"]["kind"] == "fusion" and record["teacher"]["weights"] == [10.0, 10.0]
    assert record["teacher"]["runs"] == [str(dense), str(bm25)] and record["inputs"]["depth"] == 5
    assert record["inputs"]["run"] == str(root / "teacher" / "train.fused.trec")
    # the candidates are the fused run's top 5; the scores are on the weights' 0-20 scale
    fused = read_run(root / "teacher" / "train.fused.trec")
    for ex in read_training(scored, "scored"):
        top = sorted(fused[ex.query_id], key=lambda d: -fused[ex.query_id][d])[:5]
        assert set(ex.negative_ids) <= set(top) and max(ex.positive_scores + ex.negative_scores) <= 20.0
    assert max(len(h) for h in read_run(dense).values()) == 20 == max(len(h) for h in read_run(bm25).values())
    # the teacher's dense run is the untrained model's: its index has no adapter, the pipeline's has the trained one
    teacher_index = json.loads((root / "teacher" / "index" / "manifest.json").read_text())
    index = json.loads((root / "index" / "manifest.json").read_text())
    assert teacher_index["adapter_hash"] is None and index["adapter_hash"] is not None
    # the retriever distilled that file with KL; data.train stayed the BEIR folder
    summary = json.loads((root / "retriever" / "summary.json").read_text())
    assert summary["config"]["train"] == str(scored) and summary["config"]["loss"] == "kl"
    assert summary["config"]["negatives_run"] is None and summary["steps"] == 4
    assert Path(load_config(distil_run["config"]).data.train).is_dir()
    assert set(distil_run["metrics"]["sets"]["test"]["runs"]) == {"dense"}


def test_a_second_run_finds_every_stage_done(distil_run: dict[str, Any]) -> None:
    root = distil_run["root"]
    before = stamps(root)
    lines: list[str] = []
    metrics = Pipeline(load_config(distil_run["config"]), progress=False, echo=lines.append).run()
    assert stamps(root) == before and metrics == distil_run["metrics"]
    stages = [line for line in lines if line.startswith("[")]
    assert len(stages) == 12 and all("already done" in line for line in stages)
    assert any("teacher: score the top 5" in line for line in stages)


def test_check_shows_the_section_with_help_and_the_teacher_stages(distil_run: dict[str, Any],
                                                                   capsys: pytest.CaptureFixture) -> None:
    from peft_ir.experiment.config import TeacherSection
    from peft_ir.settings import flat_fields

    assert main(["run", str(distil_run["config"]), "--check"]) == 0
    out = capsys.readouterr().out
    section = out.split("\nteacher:", 1)[1].split("\nretriever:", 1)[0]
    helps = {f.name: f.help for f in flat_fields(TeacherSection)}
    assert "  teacher: fusion:dense,bm25  # " + helps["teacher"] in section
    assert "  teacher_weights: [10.0, 10.0]  # " + helps["teacher_weights"] in section
    assert "  teacher_batch_size: 32  # " + helps["teacher_batch_size"] in section  # a default, with its help
    assert "[7] teacher: score the top 5 of the fused run of the training queries (fusion:dense,bm25) (done)" in out
    assert "[8] train retriever: iaa-l (r=4, ar=4), 4 steps (done)" in out


def test_a_zero_shot_retriever_is_the_start_model_and_encodes_once(synthetic_beir: Path, tiny_bert_dir: Path,
                                                                    tmp_path: Path) -> None:
    """Only the re-ranker distils: the teacher's dense run is the pipeline's own dense run of the training queries."""
    cfg = load_config(write_yaml(tmp_path / "rr.yaml", tiny_config(
        synthetic_beir, tiny_bert_dir, tmp_path / "runs", name="rr", teacher=FUSION,
        retriever={"zero_shot": True, "method": None, "tuning": {}},
        reranker={"loss": "kl", "negatives": None})))
    pipeline = Pipeline(cfg, progress=False)
    stages = {s.title: s for s in pipeline.stages()}
    titles = [t.split(" (")[0].split(", top")[0] for t in stages]
    assert titles == ["BM25 index of the corpus", "BM25 run of the training queries", "encode the corpus", "index",
                      "dense search", "teacher: fuse dense + bm25 of the training queries",
                      "teacher: score the top 5 of the fused run of the training queries", "train reranker: iaa-l",
                      "re-rank the top 10", "evaluate"]
    root = pipeline.dir.root
    dense = next(s for t, s in stages.items() if t.startswith("dense search"))
    assert root / "runs" / "train.dense.trec" in dense.outputs and not (root / "teacher" / "embeddings").exists()
    assert pipeline._teacher_run("dense") == root / "runs" / "train.dense.trec"  # what the teacher fuses
    # the re-ranker reads the teacher's file, the retriever (zero-shot) nothing
    train = pipeline._train_config(RerankerTrainConfig, cfg.reranker, root / "reranker")
    assert train.train == str(root / "teacher" / "train.scored.jsonl") and train.negatives_run is None


def test_a_bm25_reranking_distils_a_hybrid_teacher_through_a_zero_shot_retriever(synthetic_beir: Path,
                                                                                  tiny_bert_dir: Path,
                                                                                  tmp_path: Path) -> None:
    """Under a BM25 first stage, a zero-shot retriever section only names the teacher's start model: the teacher's
    stages encode with it (no dense test run), and a trained retriever there is still refused (nothing would use it)."""
    sections = dict(first_stage="bm25", teacher=FUSION, retriever={"zero_shot": True, "method": None, "tuning": {}},
                    reranker={"loss": "kl", "negatives": None})
    cfg = load_config(write_yaml(tmp_path / "rr.yaml", tiny_config(synthetic_beir, tiny_bert_dir, tmp_path / "runs",
                                                                   name="rr", **sections)))
    pipeline = Pipeline(cfg, progress=False)
    titles = [t.split(" (")[0].split(", top")[0] for t in (s.title for s in pipeline.stages())]
    assert titles == ["BM25 index of the corpus", "BM25 run of the training queries", "BM25 search",
                      "teacher: encode the corpus with the untrained start model", "teacher: index",
                      "teacher: dense search of the training queries",
                      "teacher: fuse dense + bm25 of the training queries",
                      "teacher: score the top 5 of the fused run of the training queries", "train reranker: iaa-l",
                      "re-rank the top 10", "evaluate"]
    assert pipeline._teacher_run("dense") == pipeline.dir.teacher / "train.dense.trec"
    assert pipeline.start_encoder().spec.model == cfg.retriever.model
    trained = tiny_config(synthetic_beir, tiny_bert_dir, tmp_path / "runs", name="rr",
                          **{**sections, "retriever": {"method": "iaa-l", "tuning": {"r": 4, "ar": 4}}})
    with pytest.raises(ConfigError, match=r"'retriever': no dense run uses it \(first_stage is bm25\)"):
        load_config(write_yaml(tmp_path / "trained.yaml", trained))


# -- refused before any work ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("sections, message", [
    ({"teacher": {**FUSION, "teacher": "fusion:dense,bm52"}},
     r"'teacher.teacher': unknown run kind 'bm52' in 'fusion:dense,bm52'.*dense .* or bm25; did you mean 'bm25'\?"),
    ({"teacher": {**FUSION, "teacher": "fusion:dense,run"}}, r"'teacher.teacher': unknown run kind 'run'"),
    ({"teacher": {**FUSION, "teacher": "fusion:bm25,bm25"}}, r"'teacher.teacher': .*two or more different run kinds"),
    ({"teacher": {**FUSION, "depth": 0}}, r"'teacher.depth': must be at least 1, got 0"),
    ({"teacher": {**FUSION, "teacher_scale": 0}}, r"'teacher.teacher_scale': must be a positive number, got 0"),
    ({"teacher": {**FUSION, "hits": 4}}, r"'teacher.hits': .*top depth \(5\) hits: hits must be at least that, got 4"),
    ({"teacher": {**FUSION, "candidates": "reranked"}}, r"'teacher.candidates': expected one of dense, bm25, fused, file"),
    ({"teacher": {**FUSION, "teacher_weights": [1, 2, 3]}}, r"'teacher.teacher_weights': needs one weight per run"),
    ({"teacher": {**FUSION, "teacher_kind": "cross-encoder"}}, r"'teacher.teacher_kind': applies to a model teacher"),
    ({"teacher": {**FUSION, "teacher_dtype": "bfloat16"}}, r"'teacher.teacher_dtype': applies to a model teacher"),
    ({"teacher": {"teacher": "TINY_MODEL", "depth": 5}}, r"'teacher.candidates': fused is a fusion teacher's own"),
    ({"teacher": {"depth": 5}}, r"'teacher.teacher': required key is missing"),
    ({"teacher": FUSION, "retriever": {"loss": "infonce", "negatives": None, "num_negatives": 0}},
     r"'teacher': no section distils its scores"),
    ({"teacher": FUSION, "retriever": {**DISTIL, "negatives": "bm25"}},
     r"'retriever.negatives': the teacher's scored file carries its own negatives"),
    ({"teacher": None}, r"'retriever.loss': kl distils teacher scores, and the BEIR folder .* has none: add a teacher "
                        r"section"),
])
def test_teacher_refusals_name_the_key(sections: dict[str, Any], message: str, synthetic_beir: Path,
                                       tiny_bert_dir: Path, tmp_path: Path) -> None:
    data = _config(synthetic_beir, tiny_bert_dir, tmp_path, **sections)
    if isinstance(data["teacher"], dict) and data["teacher"].get("teacher") == "TINY_MODEL":
        data["teacher"]["teacher"] = str(tiny_bert_dir)
    with pytest.raises(ConfigError, match=message):
        load_config(write_yaml(tmp_path / "bad.yaml", data))


def test_a_teacher_needs_runs_and_data_the_pipeline_has(synthetic_beir: Path, synthetic_scored: Path,
                                                        tiny_bert_dir: Path, tmp_path: Path) -> None:
    # dense is the retriever's start model: without a retriever there is none
    no_retriever = _config(synthetic_beir, tiny_bert_dir, tmp_path, first_stage="bm25", retriever=None,
                           reranker={"loss": "kl", "negatives": None})
    with pytest.raises(ConfigError, match=r"'teacher.teacher': dense is the run of the retriever's untrained start "
                                          r"model, and there is no retriever section \(first_stage is bm25\): use "
                                          r"bm25, a dense first stage, or add retriever: \{zero_shot: true\}"):
        load_config(write_yaml(tmp_path / "bm25.yaml", no_retriever))
    # ... and with bm25 alone as candidates and a model teacher, that experiment is fine
    no_retriever["teacher"] = {"teacher": str(tiny_bert_dir), "teacher_kind": "cross-encoder", "candidates": "bm25",
                               "depth": 5}
    cfg = load_config(write_yaml(tmp_path / "bm25.yaml", no_retriever))
    assert cfg.teacher.teacher == str(tiny_bert_dir) and cfg.teacher_run_kinds() == ["bm25"]
    # the teacher scores a BEIR training split's judged queries
    on_file = _config(synthetic_beir, tiny_bert_dir, tmp_path)
    on_file["data"] = {"beir": str(synthetic_beir), "train": str(synthetic_scored)}
    with pytest.raises(ConfigError, match=r"'teacher.teacher': the training data is a file .* a fusion teacher or "
                                          r"run candidates need a BEIR folder"):
        load_config(write_yaml(tmp_path / "file.yaml", on_file))
    on_file["teacher"] = {"teacher": str(tiny_bert_dir), "candidates": "bm25"}
    with pytest.raises(ConfigError, match=r"'teacher.candidates': the training data is a file .* a model teacher "
                                          r"scores its own passages \(candidates: file\)"):
        load_config(write_yaml(tmp_path / "file.yaml", on_file))
    on_beir = _config(synthetic_beir, tiny_bert_dir, tmp_path, teacher={"teacher": str(tiny_bert_dir),
                                                                        "candidates": "file"})
    with pytest.raises(ConfigError, match=r"'teacher.candidates': file scores a training file's own passages, and "
                                          r"the training data is the BEIR folder"):
        load_config(write_yaml(tmp_path / "beir.yaml", on_beir))
    # a model teacher that is not there is named before any work
    missing = _config(synthetic_beir, tiny_bert_dir, tmp_path,
                      teacher={"teacher": str(tmp_path / "no-such-model"), "candidates": "bm25", "depth": 5})
    with pytest.raises(ConfigError, match=r"'teacher.teacher': .*no-such-model"):
        load_config(write_yaml(tmp_path / "missing.yaml", missing))
    with pytest.raises(PeftIRError):  # --check says so too (a local path is never a note)
        load_config(write_yaml(tmp_path / "missing.yaml", missing), notes=[])


def test_a_retriever_distils_a_scored_file_given_as_data(synthetic_beir: Path, synthetic_scored: Path,
                                                         tiny_bert_dir: Path, tmp_path: Path) -> None:
    """No teacher section: the scored training file is the user's (the pilot's hand-made teacher), no stage makes one,
    and the retriever trains on it (a BM25 test run and its fusion with dense beside, as a hybrid config has)."""
    data = _config(synthetic_beir, tiny_bert_dir, tmp_path, teacher=None, fuse={"method": "interpolate"})
    data["data"] = {**data["data"], "train": str(synthetic_scored)}
    pipeline = Pipeline(load_config(write_yaml(tmp_path / "given.yaml", data)), progress=False)
    titles = [s.title.split(" (")[0].split(", top")[0].split(":")[0] for s in pipeline.stages()]
    assert titles == ["BM25 index of the corpus", "train retriever", "encode the corpus", "index", "dense search",
                      "BM25 search", "fuse dense + bm25", "evaluate"]
    root = pipeline.dir.root
    train = pipeline._train_config(RetrieverTrainConfig, pipeline.cfg.retriever, root / "retriever")
    assert train.train == str(synthetic_scored) and train.loss == "kl" and train.negatives_run is None


def test_a_model_teacher_scores_a_training_file_the_reranker_distils(synthetic_beir: Path, tiny_bert_dir: Path,
                                                                      tmp_path: Path) -> None:
    """Training data given as a file (the MS MARCO-domain configs' shape): the teacher scores the file's own
    positives and negatives (candidates: file), on the scale asked for, and the re-ranker trains on that file."""
    pytest.importorskip("pyserini", reason="BM25 needs pyserini (a declared dependency)")
    from peft_ir.data import BeirDataset, load_corpus
    from peft_ir.retriever.config import EncoderSpec
    from peft_ir.retriever.encoder import BiEncoder

    ds = BeirDataset(synthetic_beir, "train")
    corpus, queries, qrels = load_corpus(ds.corpus_path), ds.queries(), ds.qrels()
    texts = [doc.joined() for doc in corpus.values()][:12]  # a small pool: passages repeat across queries
    train = tmp_path / "train.jsonl"
    with open(train, "w", encoding="utf-8") as fh:
        for i, (qid, judged) in enumerate(list(qrels.items())[:24]):
            pos = next(d for d, g in judged.items() if g > 0)
            fh.write(json.dumps({"query": queries[qid], "pos": [corpus[pos].joined()],
                                 "neg": [texts[(i + k) % len(texts)] for k in range(4)]}) + "\n")
    teacher = {"teacher": str(tiny_bert_dir), "candidates": "file", "teacher_scale": 20}
    data = tiny_config(synthetic_beir, tiny_bert_dir, tmp_path / "runs", name="file", first_stage="bm25",
                       retriever=None, bm25={"threads": 1}, teacher=teacher,
                       reranker={"loss": "kl", "negatives": None, "negatives_pool": 4})
    data["data"] = {"beir": str(synthetic_beir), "train": str(train)}
    pipeline = Pipeline(load_config(write_yaml(tmp_path / "file.yaml", data)), progress=False)
    titles = [s.title.split(" (")[0].split(", top")[0] for s in pipeline.stages()]
    assert titles == ["BM25 index of the corpus", "BM25 search",
                      "teacher: score the positives and negatives of the training file", "train reranker: iaa-l",
                      "re-rank the top 10", "evaluate"]
    metrics = pipeline.run()
    assert "reranked" in metrics["sets"]["test"]["runs"]
    scored = list(read_training(pipeline.dir.teacher_scored, "scored"))
    assert len(scored) == 24 and all(len(ex.positives) == 1 and 3 <= len(ex.negatives) <= 4 for ex in scored)
    enc = BiEncoder(EncoderSpec(model=str(tiny_bert_dir)), device="cpu")
    q = enc.encode_queries([scored[0].query])[0]
    p = enc.encode_passages(scored[0].positives + scored[0].negatives)
    got = (scored[0].positive_scores or []) + (scored[0].negative_scores or [])
    assert got == pytest.approx(list(20.0 * (p @ q)), rel=1e-4, abs=1e-4)
    train_cfg = pipeline._train_config(RerankerTrainConfig, pipeline.cfg.reranker, pipeline.dir.reranker)
    assert train_cfg.train == str(pipeline.dir.teacher_scored) and train_cfg.loss == "kl"


def test_precision_reaches_a_model_teacher_and_not_a_fusion_teacher(synthetic_beir: Path, tiny_bert_dir: Path,
                                                                   tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    model = {"teacher": str(tiny_bert_dir), "teacher_kind": "cross-encoder", "candidates": "bm25", "depth": 5}
    cfg = load_config(write_yaml(tmp_path / "model.yaml", _config(synthetic_beir, tiny_bert_dir, tmp_path,
                                                                  precision="bfloat16", teacher=model)))
    assert cfg.teacher.teacher_dtype == "bfloat16" and cfg.encode.dtype == "bfloat16"
    fused = load_config(write_yaml(tmp_path / "fused.yaml", _config(synthetic_beir, tiny_bert_dir, tmp_path,
                                                                    precision="bfloat16")))
    assert fused.teacher.teacher_dtype == "float32" and fused.encode.dtype == "bfloat16"  # its dense run: encode's
    with pytest.raises(ConfigError, match=r"'teacher.teacher_dtype'.*precision: float32 makes it float32"):
        load_config(write_yaml(tmp_path / "both.yaml", _config(synthetic_beir, tiny_bert_dir, tmp_path,
                                                               precision="float32",
                                                               teacher={**model, "teacher_dtype": "bfloat16"})))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"'teacher.teacher_dtype'.*float16 needs a GPU"):
        load_config(write_yaml(tmp_path / "half.yaml", _config(synthetic_beir, tiny_bert_dir, tmp_path,
                                                               teacher={**model, "teacher_dtype": "float16"})))
