"""A small synthetic BEIR folder: each query shares rare words with exactly one document, so tuning can learn it."""

from __future__ import annotations

import random
from pathlib import Path

from peft_ir.data import Document, write_beir_qrels, write_corpus, write_queries

WORDS = ("alpha beta gamma delta epsilon zeta theta iota kappa lambda sigma omega river stone cloud tree "
         "light metal glass paper water fire earth wind north south east west red blue green black").split()


def make_beir(root: Path, n_docs: int = 60, n_train: int = 40, n_test: int = 10, seed: int = 0) -> Path:
    rng = random.Random(seed)
    docs, queries, train, test = [], {}, {}, {}
    for i in range(n_docs):
        words = rng.sample(WORDS, 6)
        docs.append(Document(f"d{i}", words[0], " ".join(words[1:] + rng.sample(WORDS, 4))))
        if i < n_train + n_test:
            qid = f"q{i}"
            queries[qid] = " ".join(words[:3])
            (train if i < n_train else test)[qid] = {f"d{i}": 1}
    root.mkdir(parents=True, exist_ok=True)
    write_corpus(docs, root / "corpus.jsonl")
    write_queries(queries, root / "queries.jsonl")
    write_beir_qrels(train, root / "qrels" / "train.tsv")
    write_beir_qrels(test, root / "qrels" / "test.tsv")
    return root
