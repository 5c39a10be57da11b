"""Bi-encoder retrievers: model, corpus encoding (and, later, contrastive training)."""

from peft_ir.retriever.encode import encode_corpus, iter_embeddings, read_manifest
from peft_ir.retriever.encoder import BiEncoder, EncoderSpec, spec_from_manifest

__all__ = ["BiEncoder", "EncoderSpec", "encode_corpus", "iter_embeddings", "read_manifest", "spec_from_manifest"]
