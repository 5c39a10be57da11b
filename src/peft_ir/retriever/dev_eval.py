"""nDCG@10 on the dev split during training, computed with ir-measures like every other number we report."""

from __future__ import annotations

import numpy as np
from sentence_transformers.base.evaluation.evaluator import BaseEvaluator

from peft_ir.data.dev_split import DevSet
from peft_ir.data.trec import Run
from peft_ir.eval import parse_measures, per_query


def dev_run(query_vecs: np.ndarray, doc_vecs: np.ndarray, qids: list[str], docids: list[str], k: int = 100
            ) -> Run:
    """Exact inner-product top-k (the dev corpus is small enough for one matrix product)."""
    scores = query_vecs @ doc_vecs.T
    k = min(k, len(docids))
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return {q: {docids[j]: float(scores[i, j]) for j in top[i]} for i, q in enumerate(qids)}


class DevEvaluator(BaseEvaluator):
    """A sentence-transformers evaluator: encodes dev queries and dev corpus with the model being trained.

    Queries and passages are encoded as tasks "query" and "document", so a BiEncoder's model cuts them at its
    query and passage lengths as search does, and scored by the raw inner product of the model's outputs as the
    index scores them (cosine exactly when the model ends in a Normalize module).
    """

    def __init__(self, dev: DevSet, measure: str = "nDCG@10", query_prefix: str = "", passage_prefix: str = "",
                 batch_size: int = 64, name: str = "dev"):
        super().__init__()
        self.dev = dev
        self.measures = parse_measures([measure])
        self.query_prefix, self.passage_prefix = query_prefix, passage_prefix
        self.batch_size = batch_size
        self.name = name
        self.primary_metric = f"{name}_{measure}"
        self.greater_is_better = True
        self.qids = list(dev.queries)
        self.docids = list(dev.corpus)
        self.per_query: dict[str, float] = {}  # the latest evaluation's value per dev query (model selection)

    def __call__(self, model, output_path=None, epoch: int = -1, steps: int = -1) -> dict[str, float]:  # type: ignore[no-untyped-def]
        q = model.encode([self.dev.queries[x] for x in self.qids], prompt=self.query_prefix or None, task="query",
                         batch_size=self.batch_size, convert_to_numpy=True)
        d = model.encode([self.dev.corpus[x] for x in self.docids], prompt=self.passage_prefix or None,
                         task="document", batch_size=self.batch_size, convert_to_numpy=True)
        run = dev_run(np.asarray(q), np.asarray(d), self.qids, self.docids)
        self.per_query = per_query(self.dev.qrels, run, self.measures)[str(self.measures[0])]
        return {self.primary_metric: sum(self.per_query.values()) / len(self.per_query)}

    def store_metrics_in_model_card_data(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        """No model card is written for adapters."""

    @property
    def description(self) -> str:
        return f"dev {self.primary_metric}"
