"""Cross-encoder rerankers: model (model.py), training with LCE/BCE (training.py), re-ranking of runs with a
resumable score cache (rerank.py), MS MARCO-domain training data with BM25 negatives (msmarco.py).

Heavy modules are imported lazily: `from peft_ir.reranker.model import CrossEncoder` etc.
"""
