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


def overlap_runs(beir: Path, out: Path, depth: int = 20) -> dict[str, Path]:
    """Word-overlap runs (top `depth`, ties broken by seeded noise) of a synthetic folder's train and test queries."""
    from peft_ir.data import BeirDataset, load_corpus, write_run

    corpus = load_corpus(beir / "corpus.jsonl")
    paths = {}
    for split in ("train", "test"):
        queries = BeirDataset(beir, split).queries()
        run = {}
        for qid, text in queries.items():
            q = set(text.split())
            scores = {d: len(q & set(doc.joined().split())) + random.Random(f"{qid}{d}").random() * 0.5
                      for d, doc in corpus.items()}
            run[qid] = dict(sorted(scores.items(), key=lambda kv: -kv[1])[:depth])
        write_run(run, out / f"{split}.trec", tag="overlap")
        paths[split] = out / f"{split}.trec"
    return paths
