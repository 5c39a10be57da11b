"""Evaluation against the published figures, and the pieces of `compare`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peft_ir.cli import main
from peft_ir.data import load_qrels, qrels_source, read_run, write_run, write_trec_qrels
from peft_ir.eval import compare, default_measures, evaluate, guess_preset, holm, parse_measures, per_query
from peft_ir.errors import PeftIRError
from peft_ir.eval.compare import paired_t_p
from peft_ir.training.selection import paired_p

RUNS = ["bm25_top100", "bm25rm3_top100", "tasb_top100", "spladepp_top100", "ada2_top100", "repllama_top200"]


def test_dl19_bm25_matches_published_figures(shared_data: Path) -> None:
    dl = shared_data / "trec-dl-2019"
    qrels = load_qrels(dl / "qrels.dl19-passage.txt")
    source = qrels_source(dl / "qrels.dl19-passage.txt")
    assert source == "trec" and guess_preset(qrels, source) == "trec-dl"
    m = evaluate(qrels, read_run(dl / "runs" / "bm25_top100.dl19.trec"), default_measures(qrels, source=source))
    assert round(m["nDCG@10"], 4) == 0.5058
    assert round(m["RR(rel=2)@10"], 4) == 0.7024


def test_cli_eval_prints_reference_numbers(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dl = shared_data / "trec-dl-2019"
    assert main(["eval", "--qrels", str(dl / "qrels.dl19-passage.txt"), "--run", str(dl / "runs" / "bm25_top100.dl19.trec")]) == 0
    out = capsys.readouterr().out
    assert "| nDCG@10 | RR(rel=2)@10 |" in out and "0.5058 | 0.7024" in out


def test_cli_compare_six_runs(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dl = shared_data / "trec-dl-2019"
    runs = [str(dl / "runs" / f"{r}.dl19.trec") for r in RUNS]
    assert main(["compare", *runs, "--qrels", str(dl / "qrels.dl19-passage.txt")]) == 0
    out = capsys.readouterr().out
    rows = [ln for ln in out.splitlines() if ln.startswith("| ") and ".trec" in ln]
    assert len(rows) == 6 and "(baseline)" in rows[0] and "†" not in rows[0]
    # SPLADE++ is far above BM25 on nDCG@10 over 43 queries: that difference must be marked significant
    splade = next(r for r in rows if "spladepp" in r)
    assert "†" in splade.split("|")[2]


def test_ties_are_ordered_once_as_trec_eval_orders_them() -> None:
    # trec_eval breaks equal scores by docid descending: c, b, a. Every measure must see that one order (the
    # msmarco provider behind RR@10 and pytrec_eval behind P@1/nDCG/AP used to break ties in opposite directions).
    qrels = {"q1": {"a": 1}, "q2": {"c": 1}}
    run = {q: {"a": 1.0, "b": 1.0, "c": 1.0} for q in qrels}
    values = per_query(qrels, run, parse_measures(["RR@10", "RR", "P@1", "nDCG@10", "AP"]))
    assert {m: v["q1"] for m, v in values.items()} == pytest.approx(
        {"RR@10": 1 / 3, "RR": 1 / 3, "P@1": 0.0, "nDCG@10": 0.5, "AP": 1 / 3})
    assert {m: v["q2"] for m, v in values.items()} == pytest.approx(
        {"RR@10": 1.0, "RR": 1.0, "P@1": 1.0, "nDCG@10": 1.0, "AP": 1.0})


def test_a_written_run_evaluates_like_the_run_in_memory(tmp_path: Path) -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 2, "c": 1}}
    run = {"q1": {"a": 1.0, "b": 1.0, "c": 0.5}, "q2": {"a": 2.0, "b": 2.0, "c": 2.0, "d": 3.0}}
    measures = parse_measures(["RR@10", "P@1", "nDCG@10", "AP"])
    write_run(run, tmp_path / "r.trec")
    assert evaluate(qrels, read_run(tmp_path / "r.trec"), measures) == evaluate(qrels, run, measures)
    # the rank column follows the order evaluation uses: score descending, then docid descending
    written = [ln.split()[2] for ln in (tmp_path / "r.trec").read_text().splitlines()]
    assert written == ["b", "a", "c", "d", "c", "b", "a"]


def test_cli_eval_repllama_ties_in_trec_eval_order(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The RepLLaMA run has tied scores: with trec_eval's order RR(rel=2)@10 is 0.9138 (0.9079 with docid ascending)."""
    import pytrec_eval

    dl = shared_data / "trec-dl-2019"
    qrels_path, run_path = dl / "qrels.dl19-passage.txt", dl / "runs" / "repllama_top200.dl19.trec"
    assert main(["eval", "--qrels", str(qrels_path), "--run", str(run_path), "--format", "json"]) == 0
    got = json.loads(capsys.readouterr().out)[run_path.name]
    assert round(got["RR(rel=2)@10"], 4) == 0.9138
    # independent reference: pytrec_eval on the run re-scored to distinct scores in trec_eval's order
    qrels, run = load_qrels(qrels_path), read_run(run_path)
    order = {q: sorted(h, key=lambda d: (h[d], d), reverse=True) for q, h in run.items()}
    top10 = {q: {d: float(10 - i) for i, d in enumerate(docs[:10])} for q, docs in order.items()}
    ref = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}, relevance_level=2).evaluate(top10)
    assert got["RR(rel=2)@10"] == pytest.approx(sum(v["recip_rank"] for v in ref.values()) / len(qrels))


def _graded_beir(root: Path) -> tuple[Path, Path]:
    """A BEIR folder whose test qrels are graded 0-2 (as NFCorpus, TREC-COVID, DBPedia), and a run over it."""
    from peft_ir.data import Document, write_beir_qrels, write_corpus, write_queries

    qrels = {"q1": {"d1": 2, "d2": 1, "d3": 0}, "q2": {"d2": 2, "d4": 1}}
    write_corpus([Document(f"d{i}", "", f"text {i}") for i in range(1, 5)], root / "corpus.jsonl")
    write_queries({"q1": "one", "q2": "two"}, root / "queries.jsonl")
    write_beir_qrels(qrels, root / "qrels" / "test.tsv")
    run = root / "run.trec"
    write_run({"q1": {"d1": 2.0, "d2": 1.0}, "q2": {"d4": 2.0, "d2": 1.0}}, run)
    return root, run


def test_graded_beir_folder_gets_beir_measures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder, run = _graded_beir(tmp_path)
    assert main(["eval", "--qrels", str(folder), "--run", str(run), "--format", "json"]) == 0
    assert list(json.loads(capsys.readouterr().out)[run.name]) == ["nDCG@10", "R@100", "R@1000"]
    # the same qrels as a BEIR tsv are BEIR too; the same grades in a TREC qrels file are TREC DL
    assert main(["eval", "--qrels", str(folder / "qrels" / "test.tsv"), "--run", str(run), "--format", "json"]) == 0
    assert list(json.loads(capsys.readouterr().out)[run.name]) == ["nDCG@10", "R@100", "R@1000"]
    trec = tmp_path / "qrels.txt"
    write_trec_qrels(load_qrels(folder), trec)
    assert main(["eval", "--qrels", str(trec), "--run", str(run), "--format", "json"]) == 0
    assert list(json.loads(capsys.readouterr().out)[run.name]) == ["nDCG@10", "RR(rel=2)@10", "R(rel=2)@1000",
                                                                   "AP(rel=2)"]


@pytest.mark.parametrize(("source", "preset"), [
    ("beir", "beir"), ("trec", "trec-dl"),
    ("irds:beir/trec-covid", "beir"), ("irds:msmarco-passage/trec-dl-2019/judged", "trec-dl"),
    ("irds:msmarco-passage/dev/small", "msmarco"),
])
def test_preset_follows_the_kind_of_collection(source: str, preset: str) -> None:
    graded = {"q1": {"d1": 2, "d2": 1}}
    assert guess_preset(graded, source) == preset
    binary = {f"q{i}": {"d1": 1} for i in range(5000)}
    assert guess_preset(binary, "trec") == "msmarco" and guess_preset(binary, "beir") == "beir"


def test_missing_queries_count_as_zero() -> None:
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    run = {"q1": {"d1": 1.0}}
    assert evaluate(qrels, run, parse_measures(["RR@10"])) == {"RR@10": 0.5}


def test_ignore_self_drops_self_hits() -> None:
    qrels = {"q1": {"d1": 1}}
    run = {"q1": {"q1": 9.0, "d1": 1.0}}
    measures = parse_measures(["RR@10"])
    assert evaluate(qrels, run, measures)["RR@10"] == 0.5
    assert evaluate(qrels, run, measures, ignore_self=True)["RR@10"] == 1.0


def test_a_query_left_without_hits_by_ignore_self_is_counted_as_missing(caplog: pytest.LogCaptureFixture) -> None:
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 1}}
    run = {"q1": {"d1": 1.0}, "q2": {"q2": 5.0}}  # q2's only hit is itself; q3 has none
    with caplog.at_level("WARNING"):
        values = evaluate(qrels, run, parse_measures(["RR@10"]), ignore_self=True)
    assert values["RR@10"] == pytest.approx(1 / 3)
    assert "2 of 3 judged queries have no hits in the run" in caplog.text


def test_holm_adjustment() -> None:
    # classic example: p = (0.01, 0.04, 0.03) -> (0.03, 0.06, 0.06)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_compare_detects_a_consistent_improvement() -> None:
    qrels = {f"q{i}": {"good": 1} for i in range(20)}
    bad = {q: {"x": 2.0, "y": 1.5, "good": 1.0} for q in qrels}
    good = {q: {"good": 2.0} for q in qrels}
    measures = parse_measures(["RR@10"])
    c = compare({"bad": per_query(qrels, bad, measures), "same": per_query(qrels, bad, measures),
                 "good": per_query(qrels, good, measures)})
    assert c.means["good"]["RR@10"] == 1.0 and c.significant("good", "RR@10")
    assert not c.significant("same", "RR@10")


def test_paired_t_p_is_scipys_test_with_nothing_to_go_on_as_one() -> None:
    from scipy import stats

    a, b = [0.9, 0.4, 0.7, 0.6], [0.5, 0.3, 0.6, 0.7]
    assert paired_t_p(a, b) == pytest.approx(float(stats.ttest_rel(a, b).pvalue), rel=1e-12)
    assert paired_t_p(a, b, alternative="greater") == pytest.approx(paired_t_p(a, b) / 2, rel=1e-9)  # t > 0
    assert paired_t_p(a, a) == 1.0          # no difference at all
    assert paired_t_p([0.7], [0.2]) == 1.0  # one query: scipy's NaN, never significant
    # selection's one-sided test is this one where the differences vary (its own rule where they do not)
    start, cand = dict(zip("wxyz", b)), dict(zip("wxyz", a))
    assert paired_p(start, cand) == paired_t_p(a, b, alternative="greater")


def test_bad_measure_name() -> None:
    with pytest.raises(PeftIRError, match="unknown measure"):
        parse_measures(["nDCG@@10"])


def test_cli_exit_code_2_on_malformed_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("1 0 d1 1\n")
    run = tmp_path / "run.trec"
    run.write_text("1 Q0 d1 1 1.0 t\n1 Q0 d2 2 oops t\n")
    assert main(["eval", "--qrels", str(qrels), "--run", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{run}:2: field 'score'" in err
