"""MS MARCO-domain training data (BM25 negatives over the positive pool) and the CLI commands end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peft_ir.cli import main
from peft_ir.data import read_training
from peft_ir.errors import InputError
from peft_ir.reranker.msmarco import build_training_set

ROWS = [
    ("q1", "what is the boiling point of water", "p1", "Water boils at 100 degrees Celsius at sea level."),
    ("q2", "capital of france", "p2", "Paris is the capital and largest city of France."),
    ("q3", "how tall is mount everest", "p3", "Mount Everest is 8,849 metres tall, the highest mountain."),
    ("q4", "boiling water altitude", "p4", "At high altitude water boils at a lower temperature than at sea level."),
    ("q5", "largest city in france", "p2", "Paris is the capital and largest city of France."),
]


def _positives(path: Path) -> Path:
    with open(path, "w") as fh:
        for qid, q, pid, text in ROWS:
            fh.write(json.dumps({"query_id": qid, "query": q, "positive_id": pid, "positive": text}) + "\n")
    return path


def test_msmarco_training_set_has_bm25_negatives_from_the_pool(tmp_path: Path) -> None:
    pytest.importorskip("pyserini")
    out = tmp_path / "train.jsonl"
    stats = build_training_set(_positives(tmp_path / "pos.jsonl"), tmp_path / "index", out, depth=3, num_negatives=2)
    assert stats["pool"] == 4 and stats["queries"] == 5
    examples = {e.query_id: e for e in read_training(out)}
    pool = {text for *_, text in ROWS}
    for qid, _, _, text in ROWS:
        ex = examples[qid]
        assert ex.positives == [text] and text not in ex.negatives and set(ex.negatives) <= pool
    # the BM25 top non-relevant hit of "boiling water altitude" is the other boiling-water passage
    assert examples["q4"].negatives[0] == ROWS[0][3]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query_id": "q1", "query": "x", "positive_id": "p1"}\n')
    with pytest.raises(InputError, match=r"bad\.jsonl:1: field 'positive'"):
        build_training_set(bad, tmp_path / "index2", tmp_path / "o.jsonl")


def test_a_query_with_several_positives_has_none_of_them_as_negatives(tmp_path: Path) -> None:
    # MS MARCO's train qrels judge some queries twice: the second passage is relevant, never a BM25 negative
    pytest.importorskip("pyserini")
    rows = [*ROWS, ("q1", "what is the boiling point of water", "p1b",
                    "The boiling point of water is 100 degrees Celsius.")]
    path = tmp_path / "pos.jsonl"
    path.write_text("".join(json.dumps({"query_id": q, "query": t, "positive_id": p, "positive": x}) + "\n"
                            for q, t, p, x in rows))
    out = tmp_path / "train.jsonl"
    stats = build_training_set(path, tmp_path / "index", out, depth=4, num_negatives=4)
    assert stats["queries"] == 5 and stats["positives"] == 6 and stats["pool"] == 5
    examples = [e for e in read_training(out) if e.query_id == "q1"]
    assert len(examples) == 1  # one line per query: a dev split holds it out whole
    both = {ROWS[0][3], rows[-1][3]}
    assert set(examples[0].positives) == both and not both & set(examples[0].negatives)
    assert examples[0].negatives == [ROWS[3][3]]  # BM25's only other hit: the other boiling-water passage


def test_a_shared_training_set_is_reused_only_with_the_settings_that_built_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # the file is shared by every run that names it: another config's BM25 settings must not be served its negatives
    pytest.importorskip("pyserini")
    from peft_ir.errors import PeftIRError
    positives, out, index = _positives(tmp_path / "pos.jsonl"), tmp_path / "train.jsonl", tmp_path / "pool"
    first = build_training_set(positives, index, out, depth=3, num_negatives=2)
    built = out.read_bytes()
    assert build_training_set(positives, index, out, depth=3, num_negatives=2) == first and out.read_bytes() == built
    with pytest.raises(PeftIRError, match=r"was built with other settings \(k1 0\.9 -> 3\.0, b 0\.4 -> 1\.0"):
        build_training_set(positives, index, out, depth=3, num_negatives=2, k1=3.0, b=1.0)
    # other positives: the pool's index is rebuilt, not reused because it holds as many documents
    other = tmp_path / "other.jsonl"
    other.write_text(positives.read_text().replace("Paris is the capital", "Lyon is not the capital"))
    with caplog.at_level("INFO", logger="peft_ir.reranker.msmarco"):
        again = build_training_set(other, index, tmp_path / "other-train.jsonl", depth=3, num_negatives=2)
    assert again["pool"] == first["pool"] and "built from other positives (or unrecorded): rebuilt" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="peft_ir.reranker.msmarco"):
        build_training_set(other, index, tmp_path / "third.jsonl", depth=3, num_negatives=2)
    assert "rebuilt" not in caplog.text  # the same positives: the pool's index is reused


def test_cli_train_and_rerank(synthetic_beir: Path, synthetic_runs: dict, tiny_ce_dir: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "ce"
    rc = main(["train", "reranker", "--train", str(synthetic_beir), "--negatives-run", str(synthetic_runs["train"]),
               "--output", str(out), "--model", str(tiny_ce_dir), "--method", "lora", "--tuning", "lora_r=2",
               "--query-max-length", "8", "--passage-max-length", "24", "--group-size", "4", "--batch-size", "8",
               "--max-steps", "4", "--eval-steps", "2", "--save-steps", "2", "--dev-queries", "8",
               "--loss", "bce"])
    assert rc == 0 and (out / "adapter" / "adapter_config.json").is_file()
    run = tmp_path / "reranked.trec"
    args = ["rerank", "--run", str(synthetic_runs["test"]), "--topics", str(synthetic_beir), "--corpus",
            str(synthetic_beir), "--model", str(tiny_ce_dir), "--adapter", str(out / "adapter"), "--hits", "5",
            "--query-max-length", "8", "--passage-max-length", "24", "--output", str(run)]
    assert main(args) == 0
    assert "50 scored, 0 from the cache" in capsys.readouterr().out
    assert main(args) == 0
    assert "0 scored, 50 from the cache" in capsys.readouterr().out
    assert len(run.read_text().splitlines()) == 50
    bad = tmp_path / "bad.trec"
    bad.write_text("q40 Q0 missing-doc 1 1.0 x\n")
    assert main([*args[:2], str(bad), *args[3:]]) == 2
    err = capsys.readouterr().err
    assert f"{synthetic_beir}: 1 document id(s) of run {bad} are not in this corpus" in err


def test_keep_rest_appends_the_deeper_first_stage_hits_in_order() -> None:
    from peft_ir.data import ranked
    from peft_ir.data.trec import append_rest

    first = {"a": 9.0, "b": 8.0, "c": 7.0, "d": 6.0, "e": 5.0}
    out = append_rest({"b": 0.9, "a": 0.1}, ranked(first))
    assert [d for d, _ in ranked(out)] == ["b", "a", "c", "d", "e"]
    assert max(out[d] for d in "cde") < min(out["a"], out["b"])


def test_the_pipeline_rebuilds_or_refuses_a_shared_file_another_config_built(tmp_path: Path, synthetic_beir: Path,
                                                                             tiny_bert_dir: Path) -> None:
    # two experiments naming the same data.train with other BM25 settings: the second is not told "already done"
    pytest.importorskip("pyserini")
    import sys

    from peft_ir.errors import PeftIRError
    from peft_ir.experiment import load_config
    from peft_ir.experiment.pipeline import Pipeline
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiment"))
    from tiny import tiny_config, write_yaml

    train = tmp_path / "shared" / "train.jsonl"
    data = {"beir": str(synthetic_beir), "train": str(train), "build_train_from": str(_positives(tmp_path / "p.jsonl"))}

    def first_stage(name: str, **bm25: float):  # type: ignore[no-untyped-def]
        cfg = tiny_config(synthetic_beir, tiny_bert_dir, tmp_path / "runs", name=name, data=data,
                          retriever={"negatives": None}, reranker={"negatives": None}, bm25=bm25 or None)
        if not bm25:
            del cfg["bm25"]
        stage = Pipeline(load_config(write_yaml(tmp_path / f"{name}.yaml", cfg)), progress=False,
                         echo=lambda _: None).stages()[0]
        assert stage.title.startswith("training data with BM25 negatives")
        return stage

    a = first_stage("a")
    assert not a.done()
    a.action()
    assert first_stage("a").done()
    b = first_stage("b", k1=3.0, b=1.0)
    assert not b.done()
    with pytest.raises(PeftIRError, match="was built with other settings"):
        b.action()
