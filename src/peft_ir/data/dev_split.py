"""Dev sets carved from the *training* queries (seeded), so that model selection never sees test queries.

One hold-out serves both trainers; each builds its own dev set from the held-out examples:
- the retriever's (`split_dev`): a small retrieval corpus of the dev positives plus distractors (each dev query's
  first-stage top k when the examples carry them, hard negatives, and a sample of other training passages and of
  the corpus when one is given), large enough that nDCG@10 separates models but small enough to encode during
  training;
- the re-ranker's (`split_examples`): each dev query's positives and, as negatives, its first-stage top hits when
  the examples carry them (else its mined negatives): the candidates to re-rank.
The first stage's top hits are what the trained model will face, so they are what separates a better model from a
worse one; a sample alone is mostly passages any model ranks low.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from peft_ir.data.training import TrainingExample
from peft_ir.data.trec import Qrels
from peft_ir.errors import PeftIRError
from peft_ir.fingerprint import text_id

log = logging.getLogger(__name__)


def hold_out(examples: Sequence[TrainingExample], dev_queries: int, seed: int, *, shuffled: bool = False
             ) -> tuple[list[TrainingExample], list[tuple[int, TrainingExample]]]:
    """Hold out `dev_queries` *queries* by a seeded shuffle: all of a held-out query's examples leave training.

    A file may give one query several examples (a triples line per positive-negative pair, a line per positive):
    holding out examples would train on the very queries that select the checkpoint. Examples are grouped by query
    (its id, else its text), in order of first appearance; with one example per query the split is the same as a
    shuffle of the examples' positions. Returns the training rest, in input order or, with `shuffled`, in the
    shuffle's order (a prefix of it is then a seeded sample of the training queries), and one example per held-out
    query (its examples merged: every positive, and every negative that is not one of them) with the input position
    of its first example, in input order.
    """
    members = _by_query(examples)
    if dev_queries >= len(members):
        raise PeftIRError(f"--dev-queries {dev_queries} leaves no training queries (only {len(members)} queries in "
                          f"{len(examples)} examples)")
    order = list(range(len(members)))
    random.Random(seed).shuffle(order)
    rest = order[dev_queries:] if shuffled else sorted(order[dev_queries:])
    held = sorted(order[:dev_queries])
    if len(members) < len(examples):
        log.info("dev split: %d queries held out of %d (%d of %d examples: queries with several are held out whole)",
                 dev_queries, len(members), sum(len(members[g]) for g in held), len(examples))
    return ([examples[i] for g in rest for i in members[g]],
            [(members[g][0], _merged([examples[i] for i in members[g]])) for g in held])


def _merged(group: list[TrainingExample]) -> TrainingExample:
    """One query's examples as one: its positives, then its negatives that are none of them (another line's
    positive is relevant, not a negative), its first-stage hits."""
    if len(group) == 1:
        return group[0]
    positives = list(dict.fromkeys(p for ex in group for p in ex.positives))
    judged = set(positives)
    negatives = [n for n in dict.fromkeys(n for ex in group for n in ex.negatives) if n not in judged]
    first = group[0]
    return TrainingExample(first.query, positives, negatives, first.query_id,
                           first_stage=next((ex.first_stage for ex in group if ex.first_stage), None))


def subset(examples: Sequence[TrainingExample], n: int, seed: int) -> list[TrainingExample]:
    """A seeded sample of `n` queries, every example of each, in input order (all of them when there are no more
    than `n` queries); with one example per query, a sample of `n` examples."""
    members = _by_query(examples)
    if n >= len(members):
        return list(examples)
    return [examples[i] for g in sorted(random.Random(seed).sample(range(len(members)), n)) for i in members[g]]


def first_queries(examples: Sequence[TrainingExample], n: int) -> list[TrainingExample]:
    """Every example of the first `n` queries (a prefix of a seeded shuffle is a seeded sample of queries)."""
    keep = {i for g in _by_query(examples)[:n] for i in g}
    return [ex for i, ex in enumerate(examples) if i in keep]


def _by_query(examples: Sequence[TrainingExample]) -> list[list[int]]:
    """The examples' positions grouped by query (its id, else its text), in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(ex.query_id or ex.query, []).append(i)
    return list(groups.values())


@dataclass
class DevSet:
    """The retriever's dev set: queries, a small corpus (text id -> text) and its qrels."""

    queries: dict[str, str]
    corpus: dict[str, str]
    qrels: Qrels


def split_dev(examples: Sequence[TrainingExample], dev_queries: int, seed: int = 0, *, corpus_size: int = 2000,
              extra_passages: Iterable[str] = ()) -> tuple[list[TrainingExample], DevSet]:
    """Hold out `dev_queries` examples (seeded; training keeps input order) and build their retrieval dev set."""
    train, held = hold_out(examples, dev_queries, seed)
    dev = [ex for _, ex in held]
    if not dev:
        return train, DevSet({}, {}, {})
    corpus: dict[str, str] = {}
    qrels: Qrels = {}
    queries: dict[str, str] = {}
    for i, ex in enumerate(dev):
        qid = ex.query_id or f"dev{i}"
        queries[qid] = ex.query
        for text in ex.positives:
            corpus[text_id(text)] = text
            qrels.setdefault(qid, {})[text_id(text)] = 1
        for text in (*ex.negatives, *(ex.first_stage or ())):
            corpus.setdefault(text_id(text), text)
    if len(corpus) >= corpus_size and any(ex.first_stage for ex in dev):
        log.warning("the dev queries' first-stage hits fill the dev corpus (%d passages, --dev-corpus %d): it holds "
                    "no sampled passages; raise --dev-corpus", len(corpus), corpus_size)
    pool = [t for ex in train for t in (*ex.positives, *ex.negatives)] + list(extra_passages)
    random.Random(seed + 1).shuffle(pool)
    for text in pool:
        if len(corpus) >= corpus_size:
            break
        tid = text_id(text)
        if tid not in corpus and not any(tid in q for q in qrels.values()):
            corpus[tid] = text
    return train, DevSet(queries, corpus, qrels)


@dataclass
class RerankDevSet:
    """The re-ranker's dev set: each dev query's candidate passages and which of them are relevant."""

    queries: dict[str, str]
    candidates: dict[str, list[str]]            # qid -> passage texts
    qrels: Qrels                                # qid -> {candidate index as str: 1}


def split_examples(examples: list[TrainingExample], dev_queries: int, seed: int, dev_candidates: int
                   ) -> tuple[list[TrainingExample], RerankDevSet]:
    """Hold out `dev_queries` examples (seeded; training in the shuffle's order, so that a prefix of it is a
    seeded sample); the dev candidates are their positives + their first-stage top hits (when the examples carry
    them, else their negatives), `dev_candidates` in all (all positives at least)."""
    train, held = hold_out(examples, dev_queries, seed, shuffled=True)
    dev = RerankDevSet({}, {}, {})
    for i, ex in held:
        qid = ex.query_id or f"dev{i}"
        others = [t for t in ex.first_stage if t not in ex.positives] if ex.first_stage else ex.negatives
        cands = list(dict.fromkeys([*ex.positives, *others]))[:max(dev_candidates, len(ex.positives))]
        dev.queries[qid] = ex.query
        dev.candidates[qid] = cands
        dev.qrels[qid] = {str(j): 1 for j, text in enumerate(cands) if text in ex.positives}
    return train, dev
