"""`peft-ir annotate`: scores from each kind of teacher, labels from the qrels, the teacher recorded, resumption to
the same bytes, and inputs checked before any teacher is loaded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from peft_ir.cli import main
from peft_ir.data import Document, read_training, write_beir_qrels, write_corpus, write_queries, write_run
from peft_ir.errors import InputError, PeftIRError
from peft_ir.teacher import annotate as annotate_module
from peft_ir.teacher.annotate import annotate, partial_paths, record_path
from peft_ir.teacher.config import AnnotateConfig, TeacherConfig, fusion_runs


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def _cfg(out: Path, teacher: str, dataset: Path | None = None, run: Path | None = None, **kw) -> AnnotateConfig:  # type: ignore[no-untyped-def]
    scorer = {k: kw.pop(k) for k in list(kw) if k.startswith("teacher_")}
    return AnnotateConfig(dataset=str(dataset) if dataset else None, run=str(run) if run else None, output=str(out),
                          scorer=TeacherConfig(teacher=teacher, **scorer), progress=False, **kw)


@pytest.fixture
def hand_made(tmp_path: Path) -> dict[str, Path]:
    """Two train queries over five documents, two runs with hand-picked scores."""
    root = tmp_path / "beir"
    write_corpus([Document(f"d{i}", f"title {i}", f"text {i}") for i in range(1, 6)], root / "corpus.jsonl")
    write_queries({"q1": "first query", "q2": "second query"}, root / "queries.jsonl")
    write_beir_qrels({"q1": {"d5": 2, "d3": 0}, "q2": {"d1": 1}}, root / "qrels" / "train.tsv")
    a, b = tmp_path / "a.trec", tmp_path / "b.trec"
    write_run({"q1": {"d1": 3.0, "d2": 2.0, "d3": 1.0}, "q2": {"d2": 4.0, "d1": 2.0, "d4": 0.0}}, a)
    write_run({"q1": {"d2": 10.0, "d4": 0.0}, "q2": {"d1": 5.0, "d3": 1.0}}, b)
    return {"beir": root, "a": a, "b": b}


def test_fusion_teacher_scores_equal_the_hand_computed_interpolation(hand_made: dict[str, Path],
                                                                     tmp_path: Path) -> None:
    out = tmp_path / "fused.jsonl"
    s = annotate(_cfg(out, f"fusion:{hand_made['a']},{hand_made['b']}", hand_made["beir"], hand_made["a"], depth=3,
                      teacher_weights=[0.25, 0.75]))
    q1, q2 = _lines(out)
    # q1: run a min-max: d1 1, d2 .5, d3 0; run b: d2 1, d4 0. d5 (the positive) is in neither run: 0 from both.
    assert [(p["docid"], p["label"], p["score"]) for p in q1["passages"]] == [
        ("d5", 2, 0.0), ("d1", 0, 0.25), ("d2", 0, 0.25 * 0.5 + 0.75 * 1.0), ("d3", 0, 0.0)]
    # q2: run a: d2 1, d1 .5, d4 0; run b: d1 1, d3 0. The positive d1 comes first, then a's top 3 without it.
    assert [(p["docid"], p["label"], p["score"]) for p in q2["passages"]] == [
        ("d1", 1, 0.25 * 0.5 + 0.75 * 1.0), ("d2", 0, 0.25), ("d4", 0, 0.0)]
    assert q1["passages"][0]["title"] == "title 5" and q1["passages"][0]["text"] == "text 5"
    record = json.loads(record_path(out).read_text())
    assert record["teacher"]["kind"] == "fusion" and record["teacher"]["weights"] == [0.25, 0.75]
    assert record["inputs"]["depth"] == 3 and record["inputs"]["run"] == str(hand_made["a"].resolve())
    assert record["fingerprint"] and s.queries == 2 and s.passages == 7
    assert not any(p.exists() for p in partial_paths(out))
    (ex1, ex2) = read_training(out)  # the trainers' reader takes it as it is
    assert ex1.positives == ["title 5 text 5"] and ex1.negative_scores == [0.25, 0.875, 0.0]


def test_an_edit_of_a_scored_passage_makes_the_output_stale_whatever_its_length(hand_made: dict[str, Path],
                                                                                tmp_path: Path) -> None:
    # the record used to key the corpus by its byte count: an edit of the same length reused the old scores
    out = tmp_path / "fused.jsonl"
    cfg = _cfg(out, f"fusion:{hand_made['a']},{hand_made['b']}", hand_made["beir"], hand_made["a"], depth=3)
    annotate(cfg)
    assert annotate(cfg).reused  # nothing changed: reused
    corpus = hand_made["beir"] / "corpus.jsonl"
    size = corpus.stat().st_size
    corpus.write_text(corpus.read_text().replace("text 5", "TEXT 5"))  # the positive of q1, same length
    assert corpus.stat().st_size == size
    again = annotate(cfg)
    assert not again.reused and _lines(out)[0]["passages"][0]["text"] == "TEXT 5"


def _classifier_folder(tiny_bert_dir: Path, out: Path) -> Path:
    """The tiny BERT saved with a one-logit classification head: a plain cross-encoder folder."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.manual_seed(3)
    BertForSequenceClassification.from_pretrained(str(tiny_bert_dir), num_labels=1).save_pretrained(out)
    AutoTokenizer.from_pretrained(str(tiny_bert_dir)).save_pretrained(out)
    return out


def test_cross_encoder_teacher_from_a_plain_classifier_folder(synthetic_beir: Path, synthetic_runs: dict,
                                                              tiny_bert_dir: Path, tmp_path: Path) -> None:
    from peft_ir.reranker.config import CrossEncoderSpec
    from peft_ir.reranker.model import CrossEncoder

    folder = _classifier_folder(tiny_bert_dir, tmp_path / "ce")
    out = tmp_path / "ce.jsonl"
    annotate(_cfg(out, str(folder), synthetic_beir, synthetic_runs["train"], depth=4, teacher_batch_size=7))
    record = json.loads(record_path(out).read_text())
    assert record["teacher"]["kind"] == "cross-encoder" and record["batch_size"] == 7
    lines = _lines(out)
    assert len(lines) == 40
    ce = CrossEncoder(CrossEncoderSpec(model=str(folder)), device="cpu")
    assert record["fingerprint"] == ce.fingerprint()
    for line in lines[:3]:
        labels = [p["label"] for p in line["passages"]]
        assert labels[0] == 1 and labels[1:] == [0] * (len(labels) - 1) and 4 <= len(labels) <= 5
        texts = [f"{p['title']} {p['text']}" for p in line["passages"]]
        expected = ce.score([line["query"]] * len(texts), texts)
        np.testing.assert_allclose([p["score"] for p in line["passages"]], expected, atol=1e-5)


def test_bi_encoder_teacher_scores_are_inner_products(synthetic_beir: Path, synthetic_runs: dict,
                                                      tiny_bert_dir: Path, tmp_path: Path) -> None:
    from peft_ir.retriever.config import EncoderSpec
    from peft_ir.retriever.encoder import BiEncoder

    out = tmp_path / "bi.jsonl"
    annotate(_cfg(out, str(tiny_bert_dir), synthetic_beir, synthetic_runs["train"], depth=3))
    assert json.loads(record_path(out).read_text())["teacher"]["kind"] == "bi-encoder"  # no head: a bi-encoder
    enc = BiEncoder(EncoderSpec(model=str(tiny_bert_dir)), device="cpu")
    for line in _lines(out)[:3]:
        q = enc.encode_queries([line["query"]])[0]
        p = enc.encode_passages([f"{x['title']} {x['text']}" for x in line["passages"]])
        np.testing.assert_allclose([x["score"] for x in line["passages"]], p @ q, rtol=1e-5, atol=1e-5)


def test_a_training_file_gets_its_own_passages_scored(hand_made: dict[str, Path], tiny_bert_dir: Path,
                                                      tmp_path: Path) -> None:
    from peft_ir.fingerprint import text_id

    flag = tmp_path / "flag.jsonl"
    flag.write_text(json.dumps({"query": "q", "pos": ["p one"], "neg": ["n one", "n two"]}) + "\n")
    out = tmp_path / "scored.jsonl"
    annotate(AnnotateConfig(train=str(flag), output=str(out), scorer=TeacherConfig(teacher=str(tiny_bert_dir)),
                            progress=False))
    (line,) = _lines(out)
    assert [(p["docid"], p["label"]) for p in line["passages"]] == [(text_id("p one"), 1), (text_id("n one"), 0),
                                                                    (text_id("n two"), 0)]


@pytest.mark.parametrize("kind", ["cross-encoder", "bi-encoder"])
def test_a_model_teacher_logs_how_many_texts_its_limits_cut(kind: str, tiny_bert_dir: Path, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """Of two distinct queries and three distinct passages ("one two" twice), one of each is over 6 tokens whether
    the special tokens count (a bi-encoder's limit includes them) or not (a cross-encoder's pair template adds
    them after each text's own limit)."""
    flag = tmp_path / "flag.jsonl"
    rows = [{"query": "short", "pos": ["one two"], "neg": ["one two three four five six seven eight nine ten"]},
            {"query": "a much longer query than the limit of six", "pos": ["three"], "neg": ["one two"]}]
    flag.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = AnnotateConfig(train=str(flag), output=str(tmp_path / "scored.jsonl"), progress=False,
                         scorer=TeacherConfig(teacher=str(tiny_bert_dir), teacher_kind=kind,
                                              teacher_query_max_length=6, teacher_passage_max_length=6))
    with caplog.at_level("INFO"):
        annotate(cfg)
    distinct = "distinct " if kind == "cross-encoder" else ""  # each encoder's own wording
    assert f"teacher: 1 of 2 {distinct}queries longer than 6 tokens were truncated" in caplog.text
    assert f"teacher: 1 of 3 {distinct}passages longer than 6 tokens were truncated" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO"):
        annotate(cfg)  # up to date: nothing is scored, nothing is counted
    assert "truncated" not in caplog.text


class _Interrupt(Exception):
    pass


def _pooled_training_file(path: Path, queries: int, pool: int) -> Path:
    """A FlagEmbedding-shaped file whose negatives come from a small pool of passages, as MS MARCO-style files do."""
    def passage(j: int) -> str:
        return f"pooled passage {j % pool} about topic {j % pool % 7}"

    with open(path, "w", encoding="utf-8") as fh:
        for i in range(queries):
            fh.write(json.dumps({"query": f"query {i} about topic {i % pool % 7}", "pos": [passage(i)],
                                 "neg": [passage(i + k) for k in range(1, 5)]}) + "\n")
    return path


def test_a_bi_encoder_teacher_encodes_each_distinct_passage_once_and_resumes_from_its_chunks(
        tiny_bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Queries share passages: each is encoded once for the whole file, in chunks saved as they finish, so a run
    killed inside the encoding or inside the scoring ends with an uninterrupted run's bytes (and scores equal to a
    per-pair encoding)."""
    from peft_ir.retriever.config import EncoderSpec
    from peft_ir.retriever.encoder import BiEncoder
    from peft_ir.teacher import teachers

    train = _pooled_training_file(tmp_path / "train.jsonl", queries=40, pool=10)  # 40 x 5 pairs, 10 passages
    monkeypatch.setattr(teachers, "PASSAGE_CHUNK", 4)  # 10 passages: chunks of 4, 4 and 2
    encoded: list[int] = []
    real_encode = BiEncoder.encode_passages

    def counted(self, texts, *args, **kwargs):  # type: ignore[no-untyped-def]
        if len(encoded) == stop_after["chunks"]:
            raise _Interrupt
        encoded.append(len(texts))
        return real_encode(self, texts, *args, **kwargs)

    monkeypatch.setattr(BiEncoder, "encode_passages", counted)
    stop_after = {"chunks": 99}
    cfg = AnnotateConfig(train=str(train), output=str(tmp_path / "reference.jsonl"), progress=False,
                         scorer=TeacherConfig(teacher=str(tiny_bert_dir)))
    annotate(cfg)
    assert encoded == [4, 4, 2]  # 10 encodings for 200 scored pairs
    reference = (tmp_path / "reference.jsonl").read_bytes()
    enc = BiEncoder(EncoderSpec(model=str(tiny_bert_dir)), device="cpu")
    for line in _lines(tmp_path / "reference.jsonl")[:2]:
        q = enc.encode_queries([line["query"]])[0]
        p = real_encode(enc, [x["text"] for x in line["passages"]])
        np.testing.assert_allclose([x["score"] for x in line["passages"]], p @ q, rtol=1e-5, atol=1e-5)

    out = tmp_path / "out.jsonl"
    cfg = AnnotateConfig(train=str(train), output=str(out), progress=False,
                         scorer=TeacherConfig(teacher=str(tiny_bert_dir)))
    encoded.clear()
    stop_after["chunks"] = 2
    with pytest.raises(_Interrupt):  # killed while encoding the third chunk
        annotate(cfg)
    store = annotate_module.passage_store(out)
    assert sorted(f.name for f in store.iterdir()) == ["00000.npy", "00001.npy"] and not out.exists()
    encoded.clear()
    stop_after["chunks"] = 99
    real_score = teachers.BiEncoderTeacher.score

    def dies_after_one_block(self, blocks):  # type: ignore[no-untyped-def]
        if scored:
            raise _Interrupt
        scored.append(1)
        return real_score(self, blocks)

    scored: list[int] = []
    monkeypatch.setattr(teachers.BiEncoderTeacher, "score", dies_after_one_block)
    with pytest.raises(_Interrupt):  # resumed: only the third chunk is encoded; then killed after one block
        annotate(cfg)
    assert encoded == [2]
    monkeypatch.setattr(teachers.BiEncoderTeacher, "score", real_score)
    encoded.clear()
    s = annotate(cfg)
    assert s.resumed_from == annotate_module.BLOCK_QUERIES and encoded == []  # every chunk reused
    assert out.read_bytes() == reference
    assert not store.exists() and not partial_paths(out)[0].exists()
    record = json.loads(record_path(out).read_text())
    assert record["passage_chunk"] == 4 and "scale" not in record["teacher"]
    # the passages come only from prepare: scoring without it is a caller's error, not a silent slow path
    unprepared = teachers.load_teacher(teachers.resolve_teacher(TeacherConfig(teacher=str(tiny_bert_dir))))
    with pytest.raises(RuntimeError, match="before prepare"):
        unprepared.score([teachers.Block("q", "a query", [("d", "a passage")])])


def test_teacher_scale_multiplies_every_score_and_is_recorded(tiny_bert_dir: Path, tmp_path: Path) -> None:
    train = _pooled_training_file(tmp_path / "train.jsonl", queries=3, pool=5)
    plain, scaled = tmp_path / "plain.jsonl", tmp_path / "scaled.jsonl"
    for out, scale in ((plain, 1.0), (scaled, 20.0)):
        annotate(AnnotateConfig(train=str(train), output=str(out), progress=False,
                                scorer=TeacherConfig(teacher=str(tiny_bert_dir), teacher_scale=scale)))
    one = [p["score"] for line in _lines(plain) for p in line["passages"]]
    twenty = [p["score"] for line in _lines(scaled) for p in line["passages"]]
    np.testing.assert_allclose(twenty, [20.0 * x for x in one], rtol=1e-6)
    assert json.loads(record_path(scaled).read_text())["teacher"]["scale"] == 20.0


@pytest.mark.parametrize("kind", ["bi-encoder", "cross-encoder"])
def test_teacher_dtype_bfloat16_scores_close_to_float32_and_is_recorded(tiny_bert_dir: Path, tmp_path: Path,
                                                                        kind: str) -> None:
    teacher = str(tiny_bert_dir if kind == "bi-encoder" else _classifier_folder(tiny_bert_dir, tmp_path / "ce"))
    train = _pooled_training_file(tmp_path / "train.jsonl", queries=3, pool=5)
    out = tmp_path / "scored.jsonl"
    scores, fingerprints = {}, set()
    for dtype in ("float32", "bfloat16"):  # the same output path: the float32 file is not reused for bfloat16
        s = annotate(AnnotateConfig(train=str(train), output=str(out), progress=False,
                                    scorer=TeacherConfig(teacher=teacher, teacher_dtype=dtype)))
        assert not s.reused
        scores[dtype] = [p["score"] for line in _lines(out) for p in line["passages"]]
        record = json.loads(record_path(out).read_text())
        assert record["teacher"]["kind"] == kind and record["teacher"].get("dtype", "float32") == dtype
        fingerprints.add(record["fingerprint"])
    assert len(fingerprints) == 2  # the teacher's fingerprint tells the precisions apart
    assert scores["bfloat16"] != scores["float32"]  # computed in bfloat16, not silently in float32
    np.testing.assert_allclose(scores["bfloat16"], scores["float32"], rtol=0.05, atol=0.05)


def test_teacher_dtype_float16_on_the_cpu_and_for_a_fusion_teacher_is_refused_before_any_work(
        hand_made: dict[str, Path], tiny_bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(annotate_module, "build_plan", _never_loaded)
    with pytest.raises(PeftIRError, match="float16 needs a GPU"):
        annotate(_cfg(tmp_path / "out.jsonl", str(tiny_bert_dir), hand_made["beir"], hand_made["a"],
                      teacher_dtype="float16"))
    with pytest.raises(PeftIRError, match="a fusion teacher reads scores from its runs"):
        annotate(_cfg(tmp_path / "out.jsonl", f"fusion:{hand_made['a']},{hand_made['b']}", hand_made["beir"],
                      hand_made["a"], teacher_dtype="bfloat16"))
    assert not (tmp_path / "out.jsonl").exists()


def test_an_interrupted_annotation_resumes_to_the_same_bytes(synthetic_beir: Path, synthetic_runs: dict,
                                                             tiny_bert_dir: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    cfg = dict(dataset=synthetic_beir, run=synthetic_runs["train"], depth=5, teacher_kind="cross-encoder",
               teacher_query_max_length=8, teacher_passage_max_length=24)
    reference = tmp_path / "reference.jsonl"
    annotate(_cfg(reference, str(tiny_bert_dir), **cfg))
    assert "has no classification head" in caplog.text  # a forced cross-encoder without a trained head
    out = tmp_path / "out.jsonl"
    real = annotate_module.load_teacher

    def dies_after_two_blocks(*args, **kwargs):  # type: ignore[no-untyped-def]
        teacher, calls = real(*args, **kwargs), []
        score = teacher.score

        def counted(blocks):  # type: ignore[no-untyped-def]
            if len(calls) == 2:
                raise _Interrupt
            calls.append(1)
            return score(blocks)
        teacher.score = counted
        return teacher

    monkeypatch.setattr(annotate_module, "load_teacher", dies_after_two_blocks)
    with pytest.raises(_Interrupt):
        annotate(_cfg(out, str(tiny_bert_dir), **cfg))
    partial, meta = partial_paths(out)
    assert not out.exists() and meta.is_file()
    assert len(partial.read_text().splitlines()) == 2 * annotate_module.BLOCK_QUERIES
    with open(partial, "a") as fh:
        fh.write('{"query_id": "q32", "query": "torn')  # a write cut by the kill
    monkeypatch.setattr(annotate_module, "load_teacher", real)
    with pytest.raises(PeftIRError, match="depth: 5 then, 6 now"):  # other settings: refused, partial kept
        annotate(_cfg(out, str(tiny_bert_dir), **(cfg | {"depth": 6})))
    s = annotate(_cfg(out, str(tiny_bert_dir), **cfg))
    assert s.resumed_from == 32 and s.scored_queries == 8
    assert out.read_bytes() == reference.read_bytes()
    assert not partial.exists() and not meta.exists()
    again = annotate(_cfg(out, str(tiny_bert_dir), **cfg))
    assert again.reused and out.read_bytes() == reference.read_bytes()


def test_annotate_train_reload_round_trip(synthetic_beir: Path, synthetic_runs: dict, tiny_bert_dir: Path,
                                          tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A trained re-ranker (adapter) and a trained retriever teach; the scored file trains a re-ranker that
    reloads and scores."""
    import sys

    from peft_ir.reranker.config import CrossEncoderSpec
    from peft_ir.reranker.model import CrossEncoder
    from peft_ir.retriever.train import train_retriever

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tiny_train import retriever_config

    small = ["--model", str(tiny_bert_dir), "--method", "lora", "--tuning", "lora_r=2", "--query-max-length", "8",
             "--passage-max-length", "24", "--group-size", "4", "--batch-size", "8", "--max-steps", "4",
             "--eval-steps", "2", "--save-steps", "2", "--dev-queries", "0", "--no-progress"]
    # no dev split: the last step's weights, never the start (which model selection may keep with few dev queries)
    teacher = tmp_path / "teacher-ce"
    assert main(["train", "reranker", "--train", str(synthetic_beir), "--negatives-run", str(synthetic_runs["train"]),
                 "--output", str(teacher), *small]) == 0
    scored = tmp_path / "scored.jsonl"
    assert main(["annotate", "--dataset", str(synthetic_beir), "--run", str(synthetic_runs["train"]), "--depth", "6",
                 "--teacher", str(teacher), "--output", str(scored), "--device", "cpu", "--no-progress"]) == 0
    assert "with the cross-encoder teacher" in capsys.readouterr().out
    record = json.loads(record_path(scored).read_text())
    assert record["teacher"]["adapter"] == str((teacher / "adapter").resolve())
    tuned = CrossEncoder(CrossEncoderSpec(model=str(tiny_bert_dir), query_max_length=8, passage_max_length=24),
                         adapter=teacher / "adapter", device="cpu")
    assert record["fingerprint"] == tuned.fingerprint()  # the adapter, not the bare base, scored
    line = _lines(scored)[0]
    texts = [f"{p['title']} {p['text']}" for p in line["passages"]]
    np.testing.assert_allclose([p["score"] for p in line["passages"]], tuned.score([line["query"]] * len(texts), texts),
                               atol=1e-5)

    student = tmp_path / "student-ce"
    assert main(["train", "reranker", "--train", str(scored), "--output", str(student), *small]) == 0
    summary = json.loads((student / "summary.json").read_text())
    assert summary["steps"] == 4
    reloaded = CrossEncoder(CrossEncoderSpec(model=str(tiny_bert_dir), query_max_length=8, passage_max_length=24),
                            adapter=student / "adapter", device="cpu")
    assert reloaded.fingerprint() != tuned.fingerprint()
    assert all(np.isfinite(reloaded.score([line["query"]] * len(texts), texts)))

    retriever = tmp_path / "teacher-bi"
    train_retriever(retriever_config(synthetic_beir, tiny_bert_dir, retriever, max_steps=4, eval_steps=2,
                                     save_steps=2))
    bi_scored = tmp_path / "bi-scored.jsonl"
    annotate(_cfg(bi_scored, str(retriever), synthetic_beir, synthetic_runs["train"], depth=2))
    bi_record = json.loads(record_path(bi_scored).read_text())["teacher"]
    assert bi_record["kind"] == "bi-encoder" and bi_record["adapter"] == str((retriever / "adapter").resolve())
    assert bi_record["spec"]["normalize"] is True  # the training output's spec, not the folder defaults
    assert all(abs(p["score"]) <= 1.0 + 1e-5 for line in _lines(bi_scored) for p in line["passages"])


def _never_loaded(*args, **kwargs):  # type: ignore[no-untyped-def]
    raise AssertionError("the teacher was loaded before the inputs were checked")


@pytest.mark.parametrize(("change", "error", "fragment"), [
    ({"depth": 0}, PeftIRError, "--depth must be at least 1"),
    ({"run": None}, PeftIRError, "--dataset needs --run"),
    ({"teacher": "fusion:{a}"}, PeftIRError, "two or more run files"),
    ({"teacher": "fusion:{a},{beir}/nope.trec"}, InputError, "run file not found"),
    ({"teacher_weights": [1.0]}, PeftIRError, "1 weight(s) for 2 runs"),
    ({"teacher": "{beir}"}, InputError, "not a model folder"),
    ({"teacher": "no-such-owner/no-such-model"}, PeftIRError, "nor a hub model in the local cache"),
    # two slashes: only a path can look like this, so it is a missing folder, never a model to fetch
    ({"teacher": "{beir}/no-such-model"}, InputError, "no such folder (a path, not a Hub name)"),
    ({"teacher_kind": "bi-encoder"}, PeftIRError, "does not apply to a fusion teacher"),
    ({"teacher_scale": 0.0}, PeftIRError, "--teacher-scale must be a positive number, got 0.0"),
    ({"teacher_scale": float("inf")}, PeftIRError, "--teacher-scale must be a positive number, got inf"),
])
def test_bad_inputs_are_refused_before_the_teacher_loads(hand_made: dict[str, Path], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, change: dict,
                                                         error: type, fragment: str) -> None:
    monkeypatch.setattr(annotate_module, "load_teacher", _never_loaded)
    settings = {"teacher": "fusion:{a},{b}", "run": str(hand_made["a"]), "depth": 3} | change
    fmt = {k: str(v) for k, v in hand_made.items()}
    teacher = settings.pop("teacher").format(**fmt)
    run = settings.pop("run")
    with pytest.raises(error) as info:
        annotate(_cfg(tmp_path / "out.jsonl", teacher, hand_made["beir"], Path(run) if run else None, **settings))
    assert fragment in str(info.value)
    assert not (tmp_path / "out.jsonl").exists()


def test_a_docid_naming_two_passages_is_refused_before_the_teacher_loads(tmp_path: Path, tiny_bert_dir: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # a scored file whose passages are numbered per query (q1-p0, q1-n0, as write_training numbers id-less
    # passages) with a query id repeated across lines: a teacher scores each docid once, so the second line's
    # passages would get the first line's scores
    monkeypatch.setattr(annotate_module, "load_teacher", _never_loaded)
    lines = [{"query_id": "q1", "query": "query", "passages": [
        {"docid": "q1-p0", "title": "", "text": text, "label": 1, "score": 1.0},
        {"docid": "q1-n0", "title": "", "text": f"not {text}", "label": 0, "score": 0.0}]} for text in ("one", "two")]
    train = tmp_path / "numbered.jsonl"
    train.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "scored.jsonl"
    with pytest.raises(InputError, match=r"numbered\.jsonl: field 'docid': 'q1-p0' names two different passages "
                                         r"\(query q1, example 2"):
        annotate(AnnotateConfig(train=str(train), output=str(out), progress=False,
                                scorer=TeacherConfig(teacher=str(tiny_bert_dir))))
    assert not out.exists()


def test_an_unfinished_training_is_named_as_such(hand_made: dict[str, Path], tmp_path: Path) -> None:
    # a teacher run that was killed (another config's, say): say to finish it, not that the folder is no model
    folder = tmp_path / "teacher-run" / "retriever"
    (folder / "checkpoints" / "checkpoint-20").mkdir(parents=True)
    with pytest.raises(InputError, match="an unfinished training .*run that training again to finish it"):
        annotate(_cfg(tmp_path / "out.jsonl", str(folder), hand_made["beir"], hand_made["a"], depth=3))
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize(("spec", "runs"), [
    ("fusion: a.trec , b.trec", ["a.trec", "b.trec"]),  # stripped, in order
    ("fusion:dense,bm25,dense", ["dense", "bm25", "dense"]),  # as written: checking is the caller's
    ("fusion:", [""]),
    ("models/reranker", None),
    ("Fusion:a,b", None),
    (None, None),
    ("", None),
])
def test_fusion_runs_reads_the_spec_both_teachers_share(spec: str | None, runs: list[str] | None) -> None:
    assert fusion_runs(spec) == runs
    assert TeacherConfig(teacher=spec).is_fusion == (runs is not None)


def test_a_run_docid_outside_the_corpus_names_the_run_line(hand_made: dict[str, Path], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(annotate_module, "load_teacher", _never_loaded)
    bad = tmp_path / "bad.trec"
    bad.write_text("q1 Q0 d1 1 3.0 t\nq1 Q0 d77 2 2.0 t\nq2 Q0 d1 1 1.0 t\n")
    with pytest.raises(InputError) as info:
        annotate(_cfg(tmp_path / "out.jsonl", f"fusion:{bad},{hand_made['b']}", hand_made["beir"], bad, depth=5))
    assert (info.value.path, info.value.line, info.value.field) == (str(bad), 2, "docid")
    assert "'d77'" in str(info.value)
    assert main(["annotate", "--dataset", str(hand_made["beir"]), "--run", str(bad), "--teacher",
                 f"fusion:{bad},{hand_made['b']}", "--output", str(tmp_path / "o.jsonl")]) == 2
    assert f"{bad}:2: field 'docid'" in capsys.readouterr().err
