"""Training examples from a BEIR folder (qrels + corpus, hard negatives mined from a first-stage run) or from a
training file: the one source both the retriever's and the re-ranker's training read."""

from __future__ import annotations

import logging
import random
from pathlib import Path

from peft_ir.data.beir import BeirDataset, Document, load_corpus
from peft_ir.data.training import TrainingExample, read_training
from peft_ir.data.trec import Qrels, Run, ranked, read_run
from peft_ir.errors import PeftIRError

log = logging.getLogger(__name__)


def mine_negatives(run: Run, qrels: Qrels, *, depth_from: int = 1, depth_to: int = 100, num: int = 8,
                   seed: int = 0) -> dict[str, list[str]]:
    """Per query, up to `num` non-relevant docids sampled from ranks [depth_from, depth_to] of a first-stage run.

    Judged-relevant documents (grade > 0) are skipped; sampling is seeded so the same run gives the same file.
    """
    if not 1 <= depth_from <= depth_to:
        raise PeftIRError(f"rank window must satisfy 1 <= from <= to, got [{depth_from}, {depth_to}]")
    rng = random.Random(seed)
    out: dict[str, list[str]] = {}
    for qid, hits in run.items():
        positives = {d for d, g in qrels.get(qid, {}).items() if g > 0}
        window = [d for d, _ in ranked(hits, depth_to)[depth_from - 1:] if d not in positives]
        out[qid] = window if len(window) <= num else rng.sample(window, num)
    return out


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
                  first_stage_depth: int = 0) -> tuple[list[TrainingExample], list[str]]:
    """Examples from a BEIR folder (qrels split + corpus, negatives mined from `negatives_run`) or a training file.

    With a run and `first_stage_depth` k > 0, each example also carries the run's top k hits (`first_stage`), which
    the dev sets are built from. Also returns passages usable as dev distractors (the corpus, for BEIR folders).
    """
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
