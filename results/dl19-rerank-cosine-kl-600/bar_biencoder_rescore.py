"""The bar of #18's DL19 criterion, per query: the untrained all-MiniLM-L6-v2 bi-encoder re-scoring the BM25 top 100."""
import sys
import numpy as np
from peft_ir.data import iter_documents, load_topics
from peft_ir.data.trec import read_run, write_run
from peft_ir.retriever.config import EncoderSpec
from peft_ir.retriever.encoder import BiEncoder

D = "../shared/data/trec-dl-2019"
run = read_run(f"{D}/runs/bm25_top100.dl19.trec")
topics = load_topics(f"{D}/queries.tsv", "test")
need = {d for hits in run.values() for d in hits}
docs = {d.id: d.joined() for d in iter_documents(f"{D}/corpus.jsonl") if d.id in need}
enc = BiEncoder(EncoderSpec(passage_max_length=256), device="cpu")
ids = sorted(docs)
P = enc.encode_passages([docs[i] for i in ids], batch_size=32, progress=True)
row = {d: k for k, d in enumerate(ids)}
qids = sorted(run)
Q = enc.encode_queries([topics[q] for q in qids])
out = {}
for qi, q in enumerate(qids):
    out[q] = {d: float(P[row[d]] @ Q[qi]) for d in run[q]}
write_run(out, sys.argv[1], tag="minilm-rescore", hits=100)
