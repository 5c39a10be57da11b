"""BM25 through Pyserini/Lucene: the SciFact reference figures, RM3, flat contents, atomic index, Java set-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from peft_ir.cli import main
from peft_ir.data import load_qrels, read_run, write_collection, write_corpus
from peft_ir.data.beir import Document
from peft_ir.errors import PeftIRError

pytest.importorskip("pyserini", reason="BM25 needs pyserini (a declared dependency)")

# Pyserini's BEIR regression, SciFact test, "flat" (title + text), BM25 k1 0.9 b 0.4.
REFERENCE = {"nDCG@10": 0.6789, "R@100": 0.9253, "R@1000": 0.9767}
# Measured with this code (Anserini defaults fb_terms 10, fb_docs 10, original query weight 0.5).
RM3_MEASURED = {"nDCG@10": 0.6457, "R@100": 0.9147, "R@1000": 0.9800}


def evaluate(qrels_spec: Path, run_path: Path) -> dict[str, float]:
    import ir_measures

    measures = [ir_measures.nDCG @ 10, ir_measures.R @ 100, ir_measures.R @ 1000]
    agg = ir_measures.calc_aggregate(measures, load_qrels(qrels_spec, "test"), read_run(run_path))
    return {str(m): float(v) for m, v in agg.items()}


@pytest.fixture(scope="module")
def scifact_index(tmp_path_factory: pytest.TempPathFactory, scifact: Path) -> Path:
    index = tmp_path_factory.mktemp("bm25") / "scifact-flat"
    assert main(["bm25", "index", "--corpus", str(scifact), "--index", str(index), "--threads", "2"]) == 0
    return index


@pytest.mark.slow
def test_scifact_bm25_flat_reproduces_reference(scifact_index: Path, scifact: Path, tmp_path: Path):
    manifest = json.loads((scifact_index / "peft_ir_bm25.json").read_text())
    assert manifest["documents"] == 5183 and manifest["counters"]["indexed"] == 5183
    assert not [p for p in scifact_index.parent.iterdir() if p.name.startswith(".")], "temporary files left behind"
    run = tmp_path / "bm25.trec"
    assert main(["bm25", "search", "--index", str(scifact_index), "--topics", str(scifact), "--split", "test",
                 "--output", str(run), "--hits", "1000", "--k1", "0.9", "--b", "0.4", "--threads", "2"]) == 0
    lines = run.read_text().splitlines()
    assert len({line.split()[0] for line in lines}) == 300
    assert lines[0].split()[5] == "bm25"
    scores = evaluate(scifact, run)
    for name, ref in REFERENCE.items():
        assert scores[name] == pytest.approx(ref, abs=5e-4), (name, scores)


@pytest.mark.slow
def test_scifact_bm25_rm3(scifact_index: Path, scifact: Path, tmp_path: Path):
    run = tmp_path / "rm3.trec"
    assert main(["bm25", "search", "--index", str(scifact_index), "--topics", str(scifact), "--output", str(run),
                 "--rm3", "--fb-terms", "10", "--fb-docs", "10", "--original-query-weight", "0.5",
                 "--threads", "2"]) == 0
    assert run.read_text().split("\n", 1)[0].split()[5] == "bm25+rm3"
    scores = evaluate(scifact, run)
    for name, value in RM3_MEASURED.items():
        assert scores[name] == pytest.approx(value, abs=5e-4), (name, scores)

    from peft_ir.rewrite.rm3 import feedback_terms

    terms = feedback_terms(scifact_index, "0-dimensional biomaterials show inductive properties.")
    assert len(terms) >= 10 and all(w > 0 for w in terms.values())


TINY = [
    Document("d1", "Aspirin", "reduces fever and pain in adults."),
    Document("d2", "", "Ibuprofen is a nonsteroidal anti-inflammatory drug used against pain."),
    Document("d3", "Jupiter", "is the largest planet of the solar system."),
]


def test_flat_contents_title_is_searchable_and_threads_agree(tmp_path: Path):
    from peft_ir.indexing.bm25 import BM25Searcher, build_index

    corpus = tmp_path / "corpus.jsonl"
    write_corpus(TINY, corpus)
    runs = []
    for threads in (1, 2):
        index = tmp_path / f"idx{threads}"
        manifest = build_index(iter(TINY), index, threads=threads)
        assert manifest["counters"]["indexed"] == 3
        searcher = BM25Searcher(index)
        assert searcher.num_docs == 3
        runs.append(searcher.search({"q1": "aspirin", "q2": "pain", "q3": "planet", "q4": "zzzunknown"}, hits=10))
        searcher.close()
    assert runs[0] == runs[1]
    run = runs[0]
    assert list(run["q1"]) == ["d1"]  # "aspirin" occurs only in d1's title
    assert set(run["q2"]) == {"d1", "d2"}
    assert list(run["q3"]) == ["d3"]
    assert run["q4"] == {}


def test_a_query_of_more_than_1024_distinct_terms_is_searched_with_the_others(tmp_path: Path):
    # Lucene's default clause limit (1,024) failed the whole batch with an exception that named neither
    from peft_ir.indexing.bm25 import BM25Searcher, build_index

    words = [f"w{i}x" for i in range(1500)]
    docs = [Document("d1", "", " ".join(words[:700])), Document("d2", "", " ".join(words[700:]) + " aspirin")]
    build_index(iter(docs), tmp_path / "idx")
    searcher = BM25Searcher(tmp_path / "idx")
    try:
        run = searcher.search({"short": "aspirin", "long": " ".join(words)}, hits=5, threads=2)
    finally:
        searcher.close()
    assert list(run["short"]) == ["d2"] and set(run["long"]) == {"d1", "d2"}


def test_msmarco_tsv_corpus_and_rebuild_replaces_index(tmp_path: Path):
    collection = tmp_path / "collection.tsv"
    write_collection([Document("7", "", "the quick brown fox"), Document("8", "", "lazy dogs sleep")], collection)
    index = tmp_path / "idx"
    assert main(["bm25", "index", "--corpus", str(collection), "--index", str(index), "--threads", "1"]) == 0
    topics = tmp_path / "topics.tsv"
    topics.write_text("1\tfox\n2\tdogs\n")
    run = tmp_path / "run.trec"
    assert main(["bm25", "search", "--index", str(index), "--topics", str(topics), "--output", str(run)]) == 0
    assert {q: list(h) for q, h in read_run(run).items()} == {"1": ["7"], "2": ["8"]}
    # a rebuild from another corpus replaces the index as a whole
    write_collection([Document("9", "", "a fox in its den")], collection)
    assert main(["bm25", "index", "--corpus", str(collection), "--index", str(index)]) == 0
    assert main(["bm25", "search", "--index", str(index), "--topics", str(topics), "--output", str(run)]) == 0
    assert {q: list(h) for q, h in read_run(run).items()} == {"1": ["9"]}  # no hit at all for "dogs" now
    assert sorted(p.name for p in tmp_path.iterdir()) == ["collection.tsv", "idx", "run.trec", "topics.tsv"]


def test_bad_inputs_are_clean_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from peft_ir.indexing.bm25 import BM25Searcher, Rm3, build_index

    with pytest.raises(PeftIRError, match="not a Lucene index"):
        BM25Searcher(tmp_path)
    with pytest.raises(PeftIRError, match="no documents"):
        build_index(iter([]), tmp_path / "empty")
    assert not (tmp_path / "empty").exists()
    with pytest.raises(PeftIRError, match="fb_terms"):
        Rm3(fb_terms=0)
    topics = tmp_path / "t.tsv"
    topics.write_text("1\tx\n")
    assert main(["bm25", "search", "--index", str(tmp_path / "nope"), "--topics", str(topics),
                 "--output", str(tmp_path / "r.trec")]) == 2
    assert "not a Lucene index" in capsys.readouterr().err
    assert not (tmp_path / "r.trec").exists()


def test_java_setup_leaves_no_openai_key_and_uses_java_21_plus(tmp_path: Path):
    """In a fresh process without OPENAI_API_KEY: Pyserini imports, and the placeholder key does not stay set."""
    code = (
        "import os\n"
        "from peft_ir.indexing.java import lucene, autoclass, java_home, java_version\n"
        "assert lucene().LuceneSearcher is not None\n"
        "print('KEY' if 'OPENAI_API_KEY' in os.environ else 'NOKEY')\n"
        "print(os.environ.get('JAVA_HOME', 'UNSET'))\n"
        "print(autoclass('java.lang.Runtime').version().feature())\n"
        "print(java_version(java_home()))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "JAVA_HOME", "PEFT_IR_JAVA_HOME")}
    env["JAVA_HOME"] = "/nonexistent/java-home-set-by-user"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    key, java_home_after, running, declared = out.stdout.split()
    assert key == "NOKEY"
    assert java_home_after == "/nonexistent/java-home-set-by-user"  # restored after the JVM started
    assert int(running) >= 21 and int(running) == int(declared)
