"""Bi-encoder retrievers: what an encoder is (config.py), the model (encoder.py), resumable corpus encoding
(encode.py), contrastive training (train.py) and its dev evaluation (dev_eval.py).

Heavy modules are imported lazily: `from peft_ir.retriever.encoder import BiEncoder` etc.
"""
