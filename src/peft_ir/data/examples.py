"""Training examples from a BEIR folder (qrels + corpus, hard negatives mined from a first-stage run), a training
file, or a dataset named by id (`hf:` through `datasets`, `irds:` triples through ir_datasets): the one source both
the retriever's and the re-ranker's training read, and the checks that such a source can be read."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from peft_ir.data.beir import BeirDataset, Document, load_corpus
from peft_ir.data.hf import hf_examples, hf_note, is_hf, require_hf
from peft_ir.data.irds import irds_examples, irds_training_note, is_irds, require_irds_training
from peft_ir.data.training import TrainingExample, read_training
from peft_ir.data.trec import Qrels, Run, ranked, read_run
from peft_ir.errors import PeftIRError

log = logging.getLogger(__name__)


@dataclass
class MiningStats:
    """What the teacher-margin filter did: candidates in the rank windows of the filtered queries, and dropped."""

    candidates: int = 0
    dropped: int = 0
    queries: int = 0  # queries whose window was filtered (their positives have teacher scores)


def mine_negatives(run: Run, qrels: Qrels, *, depth_from: int = 1, depth_to: int = 100, num: int = 8,
                   seed: int = 0, scores: Mapping[str, Mapping[str, float]] | None = None, margin: float = 0.0,
                   stats: MiningStats | None = None) -> dict[str, list[str]]:
    """Per query, up to `num` non-relevant docids sampled from ranks [depth_from, depth_to] of a first-stage run.

    Judged-relevant documents (grade > 0) are skipped; sampling is seeded so the same run gives the same file.
    With teacher `scores` ({qid: {docid: score}}), a candidate is dropped before sampling when its score exceeds
    the query's lowest-scored positive minus `margin` (sentence-transformers' mine_hard_negatives with
    absolute_margin): likely an unjudged relevant passage, i.e. a false negative. The count dropped is logged.
    """
    if not 1 <= depth_from <= depth_to:
        raise PeftIRError(f"rank window must satisfy 1 <= from <= to, got [{depth_from}, {depth_to}]")
    if not math.isfinite(margin):
        raise PeftIRError(f"the margin must be a finite number, got {margin}")
    rng = random.Random(seed)
    stats = stats if stats is not None else MiningStats()
    out: dict[str, list[str]] = {}
    for qid, hits in run.items():
        positives = {d for d, g in qrels.get(qid, {}).items() if g > 0}
        window = [d for d, _ in ranked(hits, depth_to)[depth_from - 1:] if d not in positives]
        if scores is not None and qid in scores:
            window = _margin_filter(qid, window, positives, scores[qid], margin, stats)
        out[qid] = window if len(window) <= num else rng.sample(window, num)
    if scores is not None:
        share = stats.dropped / stats.candidates if stats.candidates else 0.0
        log.info("teacher-margin filter (margin %g): dropped %d of %d candidates (%.1f%%) in %d queries", margin,
                 stats.dropped, stats.candidates, 100 * share, stats.queries)
    return out


def _margin_filter(qid: str, window: list[str], positives: set[str], scores: Mapping[str, float], margin: float,
                   stats: MiningStats) -> list[str]:
    scored = [scores[d] for d in positives if d in scores]
    if not scored:
        return window  # no positive scored (absent from the corpus): nothing to compare with
    unscored = [d for d in window if d not in scores]
    if unscored:
        raise PeftIRError(f"query {qid!r}: candidate {unscored[0]!r} has no teacher score ({len(unscored)} such): "
                          "the scores do not cover this run's rank window")
    threshold = min(scored) - margin
    kept = [d for d in window if scores[d] <= threshold]
    stats.candidates += len(window)
    stats.dropped += len(window) - len(kept)
    stats.queries += 1
    return kept


def beir_examples(dataset: BeirDataset, corpus: dict[str, Document], negatives: dict[str, list[str]] | None = None,
                  first_stage: dict[str, list[str]] | None = None) -> list[TrainingExample]:
    """One example per judged query: its relevant documents as positives, mined negatives if any, and (given
    `first_stage`: qid -> top docids in rank order) the first stage's top hits as `first_stage` texts.

    Tolerant by design (a counted warning, not an error): judged or mined docids absent from the corpus are
    skipped, and a query left without a positive is dropped."""
    queries = dataset.queries()
    examples, absent, dropped = [], set(), 0
    texts: dict[str, str] = {}  # one string per first-stage docid, however many queries retrieve it
    for qid, judged in dataset.qrels().items():
        wanted = [d for d, g in judged.items() if g > 0] + list((negatives or {}).get(qid, []))
        absent.update(d for d in wanted if d not in corpus)
        pos = [corpus[d].joined() for d, g in judged.items() if g > 0 and d in corpus]
        if not pos:
            dropped += 1
            continue
        neg = [corpus[d].joined() for d in (negatives or {}).get(qid, []) if d in corpus]
        ex = TrainingExample(queries[qid], pos, neg, qid)
        if first_stage is not None:
            ex.first_stage = [texts.setdefault(d, corpus[d].joined()) for d in first_stage.get(qid, []) if d in corpus]
        examples.append(ex)
    if absent:
        log.warning("%s: %d docid(s) of the qrels or negatives run are absent from the corpus and skipped, e.g. %r; "
                    "%d quer(ies) left without a positive", dataset.qrels_path, len(absent), sorted(absent)[0], dropped)
    return examples


def load_examples(train: str | Path, split: str = "train", negatives_run: str | Path | None = None, *,
                  depth_from: int = 1, depth_to: int = 100, num_negatives: int = 8, seed: int = 0,
                  limit: int | None = None, first_stage_depth: int = 0) -> tuple[list[TrainingExample], list[str]]:
    """Examples from a BEIR folder (qrels split + corpus, negatives mined from `negatives_run`), a training file or
    an `hf:` / `irds:` id.

    Also returns passages usable as dev distractors (the corpus, for BEIR folders). Ids are streamed, and only
    their first `limit` queries are read (None: all); an `irds:` source keeps `num_negatives` negatives per query.
    With a run and `first_stage_depth` k > 0, each example also carries the run's top k hits (`first_stage`), which
    the dev sets are built from.
    """
    if is_hf(train) or is_irds(train):
        if negatives_run:
            raise PeftIRError("--negatives-run needs a BEIR folder as --train (an hf: or irds: source carries its "
                              "own negatives)")
        if is_hf(train):
            return list(hf_examples(str(train), limit)), []
        return irds_examples(str(train), limit, num_negatives), []
    path = Path(train)
    if path.is_dir():
        ds = BeirDataset(path, split)
        corpus = load_corpus(ds.corpus_path)
        negatives = top = None
        if negatives_run:
            run = read_run(negatives_run)
            negatives = mine_negatives(run, ds.qrels(), depth_from=depth_from, depth_to=depth_to, num=num_negatives,
                                       seed=seed)
            if first_stage_depth > 0:
                top = {qid: [d for d, _ in ranked(hits, first_stage_depth)] for qid, hits in run.items()}
        return beir_examples(ds, corpus, negatives, top), [d.joined() for d in corpus.values()]
    if negatives_run:
        raise PeftIRError("--negatives-run needs a BEIR folder as --train (a training file carries its own negatives)")
    return list(read_training(path)), []


def training_source_note(train: str) -> str | None:
    """For `peft-ir run --check`: refuse a malformed `hf:` / `irds:` id (or a missing local folder); say, as a note,
    when its data is fetched at run time rather than read from this machine. Downloads nothing; None for files."""
    if is_hf(train):
        return hf_note(train)
    if is_irds(train):
        return irds_training_note(train)
    return None


def require_training_source(train: str, *, fetch: bool = True) -> None:
    """Before any model is loaded: an `hf:` / `irds:` source that cannot be read now (offline and not cached, no
    network, package missing, unknown id) is refused with what to do. Files are left to their readers.

    With `fetch` an `irds:` source's first triple is read, which starts ir_datasets' download when its files are
    not here yet; without, only the package and the id are checked."""
    if is_hf(train):
        require_hf(train)
    elif is_irds(train):
        require_irds_training(train, peek=fetch)
