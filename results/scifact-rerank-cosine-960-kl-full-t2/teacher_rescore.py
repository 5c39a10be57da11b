"""The teacher's own nDCG@10 re-scoring the BM25 top 20 of SciFact test (results/rerank-head.md, section 13).

python results/scifact-rerank-cosine-960-kl-full-t2/teacher_rescore.py \
    runs/scifact/retrieval/full-900-seed1/runs/test.dense.trec \
    runs/scifact/rerank/iaa-l-0.5-cosine-960-kl-full/runs/test.bm25.trec data/scifact/qrels/test.tsv
The teacher's 1,000-deep dense run is read as scores; a BM25 candidate outside it is put last.
"""
import collections
import csv
import sys

import ir_measures
from ir_measures import nDCG

dense: dict[str, dict[str, float]] = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    q, _, d, _, s, _ = line.split()
    dense[q][d] = float(s)
run: dict[str, dict[str, float]] = collections.defaultdict(dict)
missing = 0
for line in open(sys.argv[2]):
    q, _, d, r, _, _ = line.split()
    if int(r) <= 20:
        missing += d not in dense[q]
        run[q][d] = dense[q].get(d, -1e9)
qrels = [ir_measures.Qrel(r[0], r[1], int(r[2])) for r in csv.reader(open(sys.argv[3]), delimiter="\t")
         if r[2].isdigit()]
print(f"pairs outside the teacher's run: {missing}", ir_measures.calc_aggregate([nDCG @ 10], qrels, run))
