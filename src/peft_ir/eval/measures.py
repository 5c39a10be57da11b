"""Measures as ir-measures values, and the default set for each kind of collection."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import ir_measures
from ir_measures import Measure

from peft_ir.data.trec import Qrels
from peft_ir.errors import PeftIRError

PRESETS: dict[str, tuple[str, ...]] = {
    "beir": ("nDCG@10", "R@100", "R@1000"),
    "trec-dl": ("nDCG@10", "RR(rel=2)@10", "R(rel=2)@1000", "AP(rel=2)"),
    "msmarco": ("RR@10", "R@1000"),
}


def parse_measures(names: Iterable[str | Measure]) -> list[Measure]:
    out = []
    for name in names:
        if isinstance(name, Measure):
            out.append(name)
            continue
        try:
            out.append(ir_measures.parse_measure(name))
        except Exception as exc:  # ir_measures raises ValueError/NameError/SyntaxError on bad names
            raise PeftIRError(f"unknown measure {name!r} ({exc}); examples: nDCG@10, RR(rel=2)@10, R@1000, AP(rel=2)") from None
    return out


def guess_preset(qrels: Qrels, source: str) -> str:
    """The default measure set for a collection, chosen by what the collection is, never by grades alone (graded
    BEIR sets such as NFCorpus or TREC-COVID are still BEIR). `source` is `peft_ir.data.qrels_source`'s answer:
    'beir' (BEIR folder or tsv) -> beir; an `irds:` id by dataset (beir/* -> beir, */trec-dl* -> trec-dl,
    msmarco-*/dev* -> msmarco); 'trec' qrels files (and other irds ids): graded (a grade >= 2, the TREC DL tracks)
    -> trec-dl, binary with >= 5,000 queries (MS MARCO dev) -> msmarco, else beir."""
    if source == "beir":
        return "beir"
    if source.startswith("irds:"):
        dataset = source.removeprefix("irds:")
        if dataset.startswith("beir/"):
            return "beir"
        if "/trec-dl" in dataset:
            return "trec-dl"
        if dataset.startswith("msmarco-") and "/dev" in dataset:
            return "msmarco"
    elif source != "trec":
        raise PeftIRError(f"unknown qrels source {source!r}; expected 'beir', 'trec' or an irds: id")
    max_grade = max((g for docs in qrels.values() for g in docs.values()), default=0)
    if max_grade >= 2:
        return "trec-dl"
    if len(qrels) >= 5000:
        return "msmarco"
    return "beir"


def default_measures(qrels: Qrels, preset: str | None = None, *, source: str) -> list[Measure]:
    """`preset`'s measures, else those of the collection `source` names (see `guess_preset`)."""
    preset = preset or guess_preset(qrels, source)
    if preset not in PRESETS:
        raise PeftIRError(f"unknown measure preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return parse_measures(PRESETS[preset])


def measure_names(measures: Sequence[Measure]) -> list[str]:
    return [str(m) for m in measures]
