"""The teacher's own nDCG@10 re-scoring the BM25 top 20 of SciFact test (results/rerank-head.md, section 13).

python results/scifact-rerank-cosine-960-kl-full-t2/teacher_rescore.py \
    runs/scifact/retrieval/full-900-seed1/runs/test.dense.trec \
    runs/scifact/rerank/iaa-l-0.5-cosine-960-kl-full/runs/test.bm25.trec data/scifact/qrels/test.tsv
The teacher's 1,000-deep dense run is read as scores; a BM25 candidate outside it is put last.
"""
import sys

from peft_ir.data import load_qrels, ranked, read_run
from peft_ir.eval.evaluate import evaluate
from peft_ir.eval.measures import parse_measures

dense, bm25 = read_run(sys.argv[1]), read_run(sys.argv[2])
run = {q: {d: dense.get(q, {}).get(d, -1e9) for d, _ in ranked(hits, 20)} for q, hits in bm25.items()}
missing = sum(d not in dense.get(q, {}) for q, hits in run.items() for d in hits)
print(f"pairs outside the teacher's run: {missing}", evaluate(load_qrels(sys.argv[3]), run, parse_measures(["nDCG@10"])))
