"""Readers and writers for IR data: BEIR folders, TREC topics/qrels/runs, MS MARCO tsv, training files, ir_datasets."""

from peft_ir.data.beir import (
    BeirDataset, Document, iter_corpus, load_corpus, read_beir_qrels, read_queries,
    write_beir_qrels, write_corpus, write_queries,
)
from peft_ir.data.msmarco import iter_collection, write_collection
from peft_ir.data.sources import iter_documents, load_qrels, load_topics, qrels_source
from peft_ir.data.training import TrainingExample, detect_shape, read_training, write_training
from peft_ir.data.trec import (
    Qrels, Run, ranked, read_run, read_topics, read_trec_qrels, write_run, write_topics, write_trec_qrels,
)

__all__ = [
    "BeirDataset", "Document", "Qrels", "Run", "TrainingExample", "detect_shape", "iter_collection", "iter_corpus",
    "iter_documents", "load_corpus", "load_qrels", "load_topics", "qrels_source", "ranked", "read_beir_qrels",
    "read_queries",
    "read_run", "read_topics", "read_training", "read_trec_qrels", "write_beir_qrels", "write_collection",
    "write_corpus", "write_queries", "write_run", "write_topics", "write_training", "write_trec_qrels",
]
