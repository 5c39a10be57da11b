"""Bi-encoder training with any tuning method, on sentence-transformers' trainer.

The loss is chosen from the registry (training/losses.py): InfoNCE over in-batch and hard negatives
(MultipleNegativesRankingLoss; GradCache's CachedMultipleNegativesRankingLoss for large batches in small memory;
negatives gathered across devices under DDP), or distillation of a scored file's teacher scores (MarginMSELoss,
DistillKLDivLoss; each row then carries the teacher's scores of its positive and negatives as its label). Every
loss scores with the similarity search uses (the inner product: cosine for a normalising encoder, dot product
otherwise) times 1 / temperature. Queries and passages are each cut at their own length as search cuts them;
warm-up, gradient accumulation, dev nDCG@10 during training, checkpoints of the trainable weights only, and
`resume` from the last complete checkpoint.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from peft_ir.data.dev_split import split_dev, subset
from peft_ir.data.examples import load_examples
from peft_ir.errors import PeftIRError
from peft_ir.retriever.dev_eval import DevEvaluator
from peft_ir.retriever.config import ENCODER_SPEC_FILE, RetrieverTrainConfig
from peft_ir.retriever.encoder import BiEncoder
from peft_ir.training.losses import BI_ENCODER, make_loss
from peft_ir.training.skeleton import TrainingTask, run_training
from peft_ir.training.tuned import TrainableOnlyCheckpoints
from peft_ir.tuning import apply_tuning

log = logging.getLogger(__name__)

def _trainer_class():  # type: ignore[no-untyped-def]
    from sentence_transformers import SentenceTransformerTrainer  # noqa: PLC0415

    class TunedTrainer(TrainableOnlyCheckpoints, SentenceTransformerTrainer):
        """Saves and restores only what the tuning method trains (plus the Trainer's own state files)."""

        def add_model_card_callback(self, default_args_dict: dict[str, Any]) -> None:
            """No model-card tracking: training saves no sentence-transformers card (`peft-ir export` writes its
            own), and the tracker's "Computing widget examples" bar broke `--no-progress` logs."""

    return TunedTrainer


def _not_positive(ex: Any) -> list[int]:
    """Positions of the example's negatives that are none of its positives."""
    judged = set(ex.positives)
    return [i for i, n in enumerate(ex.negatives) if n not in judged]


def _dataset(examples: list, num_negatives: int, seed: int, teacher: bool = False):  # type: ignore[no-untyped-def]
    """Rows of (query, positive, negative_1..n); queries without enough negatives are skipped. With `teacher`, a
    `label` column holds the teacher's scores [t(q, positive), t(q, negative_1), ...] of each row."""
    import random  # noqa: PLC0415

    from datasets import Dataset  # noqa: PLC0415

    rng = random.Random(seed)
    rows: dict[str, list[Any]] = {"query": [], "positive": []}
    neg_cols = [f"negative_{i + 1}" for i in range(num_negatives)]
    for c in neg_cols:
        rows[c] = []
    labels: list[list[float]] = []
    # a negative that is one of the query's own positives (a file can list it in both) would be trained against:
    # only the other negatives are drawn from (positions, so that teacher scores stay aligned)
    eligible = {id(ex): _not_positive(ex) for ex in examples}
    contradicted = sum(len(ex.negatives) - len(eligible[id(ex)]) for ex in examples)
    if contradicted:
        log.warning("%d negatives are also positives of their query and are not used as negatives", contradicted)
    usable = [ex for ex in examples if len(eligible[id(ex)]) >= num_negatives] if num_negatives else examples
    if num_negatives and len(usable) < len(examples):
        log.warning("%d of %d training queries have fewer than %d hard negatives and are skipped",
                    len(examples) - len(usable), len(examples), num_negatives)
    for ex in usable:
        if teacher and not ex.scored:
            raise PeftIRError(f"training query {ex.query_id or ex.query!r} has no teacher scores")
        pool = eligible[id(ex)]
        for j, pos in enumerate(ex.positives):
            rows["query"].append(ex.query)
            rows["positive"].append(pos)
            # sampling positions draws exactly what sampling the texts would (rng.sample reads only len())
            picked = [pool[k] for k in rng.sample(range(len(pool)), num_negatives)] if num_negatives else []
            for c, i in zip(neg_cols, picked):
                rows[c].append(ex.negatives[i])
            if teacher:
                labels.append([ex.positive_scores[j], *(ex.negative_scores[i] for i in picked)])
    if teacher:
        rows["label"] = labels
    if not rows["query"]:
        raise PeftIRError("no usable training example (each needs a positive and, with --num-negatives, negatives)")
    return Dataset.from_dict(rows)


class RetrieverTask(TrainingTask):
    """A bi-encoder under a loss of the registry (InfoNCE, plain or GradCache, or distillation) on
    sentence-transformers' trainer, dev nDCG@10 by search."""

    spec_file = ENCODER_SPEC_FILE

    def __init__(self, cfg: RetrieverTrainConfig):
        self.cfg = cfg
        self.objective = make_loss(cfg.loss, BI_ENCODER, cfg.distill_temperature)  # a wrong loss: refused first

    def load_data(self) -> Any:
        cfg = self.cfg
        top_k = cfg.dev_top_k if cfg.has_dev() else 0  # the first stage's hits for the dev corpus
        examples, distractors = load_examples(cfg.train, cfg.split, cfg.negatives_run, depth_from=cfg.negatives_window[0],
                                              depth_to=cfg.negatives_window[1], num_negatives=max(cfg.num_negatives, 1) * 4,
                                              seed=cfg.dev_split_seed(), limit=cfg.read_limit(), first_stage_depth=top_k)
        train_ex, self.dev = split_dev(examples, cfg.dev_queries, cfg.dev_split_seed(), corpus_size=cfg.dev_corpus,
                                       extra_passages=distractors)
        if cfg.max_queries is not None:
            train_ex = subset(train_ex, cfg.max_queries, cfg.dev_split_seed())
        self.dataset = _dataset(train_ex, cfg.num_negatives, cfg.seed, teacher=self.objective.needs_teacher)
        self.dev_evaluator = DevEvaluator(self.dev, query_prefix=cfg.encoder.query_prefix,
                                          passage_prefix=cfg.encoder.passage_prefix)
        return self.dataset

    def build_model(self, device: str) -> torch.nn.Module:
        self.encoder = BiEncoder(self.cfg.encoder, device=device)
        tuned = apply_tuning(self.encoder.hf_model, self.cfg.tuning)
        self.encoder._set_hf_model(tuned)
        return tuned

    @property
    def base_name(self) -> str | None:
        return self.cfg.encoder.model

    @property
    def dev_metric(self) -> str:
        return f"eval_{self.dev_evaluator.primary_metric}"

    def loss(self) -> Any:
        """The chosen loss's sentence-transformers module, scoring with the similarity search uses (cosine or dot:
        what the index and dev_run score with) times 1 / temperature; GradCache (infonce's cached variant) with
        `cache_mini_batch`; in-batch negatives gathered across ranks under DDP."""
        from sentence_transformers.util import cos_sim, dot_score  # noqa: PLC0415

        cfg, st = self.cfg, self.encoder.model  # st cuts task "query" at query_max_length, "document" at passage's
        cosine = bool(self.encoder.spec.normalize)
        self.similarity = cos_sim if cosine else dot_score
        self.loss_fn = self.objective.bi_encoder_loss(st, cosine=cosine, scale=1.0 / cfg.temperature,
                                                      cache_mini_batch=cfg.cache_mini_batch,
                                                      gather=int(os.environ.get("WORLD_SIZE", "1")) > 1)
        return self.loss_fn

    def evaluator(self) -> Any:
        return self.dev_evaluator if self.cfg.has_dev() else None

    def dev_per_query(self) -> dict[str, float]:
        self.dev_evaluator(self.encoder.model)
        return self.dev_evaluator.per_query

    def training_arguments(self, common: dict[str, Any]) -> Any:
        from sentence_transformers import SentenceTransformerTrainingArguments  # noqa: PLC0415
        from sentence_transformers.base.sampler import BatchSamplers  # noqa: PLC0415

        cfg = self.cfg
        passages = ["positive", *(f"negative_{i + 1}" for i in range(cfg.num_negatives))]
        prompts = {"query": cfg.encoder.query_prefix, **{c: cfg.encoder.passage_prefix for c in passages}}
        return SentenceTransformerTrainingArguments(
            **common,
            batch_sampler=BatchSamplers.NO_DUPLICATES,
            prompts={k: v for k, v in prompts.items() if v} or None,
            router_mapping={"query": "query", **{c: "document" for c in passages}},  # the task, hence the length cut
        )

    def trainer_class(self) -> type:
        return _trainer_class()

    def trainer_kwargs(self, loss: Any, evaluator: Any) -> dict[str, Any]:
        return {"model": self.encoder.model, "loss": loss, "evaluator": evaluator}

    def summary_fields(self, trainer: Any) -> dict[str, Any]:
        return {"train_examples": len(self.dataset), "dev_queries": len(self.dev.queries),
                "dev_corpus": len(self.dev.corpus), "loss": type(self.loss_fn).__name__,
                "similarity": self.similarity.__name__}

    def curve_title(self, share: float) -> str:
        return f"{self.cfg.tuning.method} retriever, {self.cfg.loss} ({share:.2%} trainable)"

    def spec(self) -> EncoderSpec:
        return self.cfg.encoder


def train_retriever(cfg: RetrieverTrainConfig) -> dict[str, Any]:
    """Train, keep the best dev checkpoint, write `<output>/adapter`, metrics.jsonl, curves.png, encoder.json and
    summary.json; returns the summary (under torchrun: on rank 0; {} on the others)."""
    return run_training(cfg, RetrieverTask(cfg))
