"""Shared training glue for retrievers and rerankers: config, checkpoints of trainable weights, logging, curves."""
