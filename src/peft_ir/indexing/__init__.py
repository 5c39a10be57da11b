"""Indexes and first-stage search: FAISS for dense vectors, Lucene BM25 through Pyserini, run fusion."""
