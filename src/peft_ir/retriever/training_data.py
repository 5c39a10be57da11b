"""Training examples from BEIR qrels (+ corpus, + hard negatives from a run) or training files, and a dev split.

The dev split is carved from the *training* queries (seeded), so model selection never sees test queries. Its
corpus is the dev positives plus distractors (other training passages, hard negatives, and a sample of the
corpus when one is given), large enough that nDCG@10 separates models but small enough to encode during training.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from peft_ir.data import BeirDataset, Document, TrainingExample, load_corpus, read_run, read_training
from peft_ir.data.trec import ranked
from peft_ir.errors import PeftIRError

log = logging.getLogger(__name__)


def mine_negatives(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]], *, depth_from: int = 1,
                   depth_to: int = 100, num: int = 8, seed: int = 0) -> dict[str, list[str]]:
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


def beir_examples(dataset: BeirDataset, corpus: dict[str, Document], negatives: dict[str, list[str]] | None = None
                  ) -> list[TrainingExample]:
    """One example per judged query: its relevant documents as positives, mined negatives if any.

    Tolerant by design (a counted warning, not an error): judged or mined docids absent from the corpus are
    skipped, and a query left without a positive is dropped."""
    queries = dataset.queries()
    examples, absent, dropped = [], set(), 0
    for qid, judged in dataset.qrels().items():
        wanted = [d for d, g in judged.items() if g > 0] + list((negatives or {}).get(qid, []))
        absent.update(d for d in wanted if d not in corpus)
        pos = [corpus[d].joined() for d, g in judged.items() if g > 0 and d in corpus]
        if not pos:
            dropped += 1
            continue
        neg = [corpus[d].joined() for d in (negatives or {}).get(qid, []) if d in corpus]
        examples.append(TrainingExample(queries[qid], pos, neg, qid))
    if absent:
        log.warning("%s: %d docid(s) of the qrels or negatives run are absent from the corpus and skipped, e.g. %r; "
                    "%d quer(ies) left without a positive", dataset.qrels_path, len(absent), sorted(absent)[0], dropped)
    return examples


@dataclass
class DevSet:
    queries: dict[str, str]
    corpus: dict[str, str]
    qrels: dict[str, dict[str, int]]


def _text_id(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def split_dev(examples: Sequence[TrainingExample], dev_queries: int, seed: int = 0, *, corpus_size: int = 2000,
              extra_passages: Iterable[str] = ()) -> tuple[list[TrainingExample], DevSet]:
    """Hold out `dev_queries` examples (seeded) and build their retrieval dev set."""
    if dev_queries >= len(examples):
        raise PeftIRError(f"--dev-queries {dev_queries} leaves no training queries (only {len(examples)} examples)")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    dev_idx = set(order[:dev_queries])
    train = [ex for i, ex in enumerate(examples) if i not in dev_idx]
    dev = [examples[i] for i in sorted(dev_idx)]
    if not dev:
        return train, DevSet({}, {}, {})
    corpus: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    queries: dict[str, str] = {}
    for i, ex in enumerate(dev):
        qid = ex.query_id or f"dev{i}"
        queries[qid] = ex.query
        for text in ex.positives:
            corpus[_text_id(text)] = text
            qrels.setdefault(qid, {})[_text_id(text)] = 1
        for text in ex.negatives:
            corpus.setdefault(_text_id(text), text)
    pool = [t for ex in train for t in (*ex.positives, *ex.negatives)] + list(extra_passages)
    random.Random(seed + 1).shuffle(pool)
    for text in pool:
        if len(corpus) >= corpus_size:
            break
        tid = _text_id(text)
        if tid not in corpus and not any(tid in q for q in qrels.values()):
            corpus[tid] = text
    return train, DevSet(queries, corpus, qrels)


def load_examples(train: str | Path, split: str = "train", negatives_run: str | Path | None = None, *,
                  depth_from: int = 1, depth_to: int = 100, num_negatives: int = 8, seed: int = 0
                  ) -> tuple[list[TrainingExample], list[str]]:
    """Examples from a BEIR folder (qrels split + corpus, negatives mined from `negatives_run`) or a training file.

    Also returns passages usable as dev distractors (the corpus, for BEIR folders).
    """
    path = Path(train)
    if path.is_dir():
        ds = BeirDataset(path, split)
        corpus = load_corpus(ds.corpus_path)
        negatives = None
        if negatives_run:
            negatives = mine_negatives(read_run(negatives_run), ds.qrels(), depth_from=depth_from,
                                       depth_to=depth_to, num=num_negatives, seed=seed)
        return beir_examples(ds, corpus, negatives), [d.joined() for d in corpus.values()]
    if negatives_run:
        raise PeftIRError("--negatives-run needs a BEIR folder as --train (a training file carries its own negatives)")
    return list(read_training(path)), []
