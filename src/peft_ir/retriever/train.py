"""Contrastive bi-encoder training with any tuning method, on sentence-transformers' trainer.

InfoNCE over in-batch and hard negatives (MultipleNegativesRankingLoss; scale = 1 / temperature) with the
similarity search uses (the inner product: cosine for a normalising encoder, dot product otherwise), queries and
passages each cut at their own length as search cuts them, GradCache
(CachedMultipleNegativesRankingLoss) for large batches in small memory, negatives gathered across devices under
DDP, warm-up, gradient accumulation, dev nDCG@10 during training, checkpoints of the trainable weights only,
and `resume` from the last complete checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from peft_ir.atomic import atomic_open
from peft_ir.data.dev_split import split_dev
from peft_ir.data.examples import load_examples
from peft_ir.devices import device_for_process, log_device
from peft_ir.errors import PeftIRError
from peft_ir.retriever.dev_eval import DevEvaluator
from peft_ir.retriever.encoder import BiEncoder, EncoderSpec
from peft_ir.training.checkpoints import prepare_run_dir
from peft_ir.training.logging import JsonlMetrics, plot_curves
from peft_ir.training.args import ScheduleConfig, common_trainer_args
from peft_ir.training.tuned import TrainableOnlyCheckpoints
from peft_ir.tuning import apply_tuning, save_tuned, trainable_parameters

log = logging.getLogger(__name__)

@dataclass(kw_only=True)
class RetrieverTrainConfig(ScheduleConfig):
    num_negatives: int = 1                      # hard negatives per query in each batch
    encoder: EncoderSpec = field(default_factory=EncoderSpec)
    cache_mini_batch: int | None = None         # GradCache mini-batch; None = plain in-batch loss
    temperature: float = 0.05
    dev_corpus: int = 2000                      # passages in the dev corpus


def _trainer_class():  # type: ignore[no-untyped-def]
    from sentence_transformers import SentenceTransformerTrainer  # noqa: PLC0415

    class TunedTrainer(TrainableOnlyCheckpoints, SentenceTransformerTrainer):
        """Saves and restores only what the tuning method trains (plus the Trainer's own state files)."""

        def tuned_model(self) -> torch.nn.Module:
            return self.model[0].auto_model

    return TunedTrainer


def _dataset(examples: list, num_negatives: int, seed: int):  # type: ignore[no-untyped-def]
    """Rows of (query, positive, negative_1..n); queries without enough negatives drop to in-batch only."""
    import random  # noqa: PLC0415

    from datasets import Dataset  # noqa: PLC0415

    rng = random.Random(seed)
    rows: dict[str, list[str]] = {"query": [], "positive": []}
    neg_cols = [f"negative_{i + 1}" for i in range(num_negatives)]
    for c in neg_cols:
        rows[c] = []
    usable = [ex for ex in examples if len(ex.negatives) >= num_negatives] if num_negatives else examples
    if num_negatives and len(usable) < len(examples):
        log.warning("%d of %d training queries have fewer than %d hard negatives and are skipped",
                    len(examples) - len(usable), len(examples), num_negatives)
    for ex in usable:
        for pos in ex.positives:
            rows["query"].append(ex.query)
            rows["positive"].append(pos)
            for c, neg in zip(neg_cols, rng.sample(ex.negatives, num_negatives) if num_negatives else []):
                rows[c].append(neg)
    if not rows["query"]:
        raise PeftIRError("no usable training example (each needs a positive and, with --num-negatives, negatives)")
    return Dataset.from_dict(rows)


def train_retriever(cfg: RetrieverTrainConfig) -> dict[str, Any]:
    """Train, keep the best dev checkpoint, write `<output>/adapter`, metrics.jsonl, curves.png, summary.json."""
    from sentence_transformers import SentenceTransformerTrainingArguments  # noqa: PLC0415
    from sentence_transformers.base.sampler import BatchSamplers  # noqa: PLC0415
    from sentence_transformers.sentence_transformer.losses import (  # noqa: PLC0415
        CachedMultipleNegativesRankingLoss, MultipleNegativesRankingLoss,
    )
    from sentence_transformers.util import cos_sim, dot_score  # noqa: PLC0415
    from transformers import set_seed  # noqa: PLC0415

    cfg.check()
    device = device_for_process()  # this rank's GPU under torchrun: the model is built there, not on GPU 0
    out, ckpt_dir, resume_from = prepare_run_dir(cfg.output, cfg.resume)

    set_seed(cfg.seed)
    examples, distractors = load_examples(cfg.train, cfg.split, cfg.negatives_run, depth_from=cfg.negatives_from,
                                          depth_to=cfg.negatives_to, num_negatives=max(cfg.num_negatives, 1) * 4,
                                          seed=cfg.dev_split_seed())
    train_ex, dev = split_dev(examples, cfg.dev_queries, cfg.dev_split_seed(), corpus_size=cfg.dev_corpus,
                              extra_passages=distractors)
    dataset = _dataset(train_ex, cfg.num_negatives, cfg.seed)
    if not cfg.has_dev():
        log.info("--dev-queries 0: no dev evaluation; the weights of the last step are kept")

    log_device("training", device)
    encoder = BiEncoder(cfg.encoder, device=device)
    st = encoder.model  # its Transformer module cuts task "query" at query_max_length, "document" at passage_max_length
    tuned = apply_tuning(encoder.hf_model, cfg.tuning)
    encoder._set_hf_model(tuned)
    trainable, total = trainable_parameters(tuned)

    world = int(os.environ.get("WORLD_SIZE", "1"))
    scale = 1.0 / cfg.temperature
    similarity = cos_sim if encoder.spec.normalize else dot_score  # what the index and dev_run score with
    if cfg.cache_mini_batch:
        loss = CachedMultipleNegativesRankingLoss(st, scale=scale, similarity_fct=similarity,
                                                  mini_batch_size=cfg.cache_mini_batch, gather_across_devices=world > 1)
    else:
        loss = MultipleNegativesRankingLoss(st, scale=scale, similarity_fct=similarity, gather_across_devices=world > 1)
    evaluator = DevEvaluator(dev, query_prefix=cfg.encoder.query_prefix, passage_prefix=cfg.encoder.passage_prefix)
    metric = f"eval_{evaluator.primary_metric}"
    if not cfg.has_dev():
        evaluator = None
    passages = ["positive", *(f"negative_{i + 1}" for i in range(cfg.num_negatives))]
    prompts = {"query": cfg.encoder.query_prefix, **{c: cfg.encoder.passage_prefix for c in passages}}
    args = SentenceTransformerTrainingArguments(
        **common_trainer_args(cfg, ckpt_dir, metric),
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        prompts={k: v for k, v in prompts.items() if v} or None,
        router_mapping={"query": "query", **{c: "document" for c in passages}},  # the task, hence the length cut
    )
    trainer = _trainer_class()(model=st, args=args, train_dataset=dataset, loss=loss, evaluator=evaluator,
                               callbacks=[JsonlMetrics(out / "metrics.jsonl")])
    trainer.peft_ir_base = cfg.encoder.model
    t0 = time.perf_counter()
    if resume_from is None and evaluator is not None:
        # the zero-step point of the learning curve: the untrained (identity-initialised) model
        trainer.evaluate()  # logged through the callbacks like every later evaluation
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    wall = time.perf_counter() - t0

    if trainer.is_world_process_zero():
        save_tuned(tuned, out / "adapter", cfg.encoder.model)
        plot_curves(out / "metrics.jsonl", out / "curves.png", metric,
                    title=f"{cfg.tuning.method} retriever ({trainable / total:.2%} trainable)")
        summary = {
            "method": cfg.tuning.method, "trainable": trainable, "total": total, "share": trainable / total,
            "steps": trainer.state.global_step, "best_checkpoint": trainer.state.best_model_checkpoint,
            "best_dev": trainer.state.best_metric, "dev_metric": metric if cfg.has_dev() else None,
            "selection": "best dev" if cfg.has_dev() else "last step (no dev queries)",
            "train_examples": len(dataset), "dev_queries": len(dev.queries), "dev_corpus": len(dev.corpus),
            "dev_seed": cfg.dev_split_seed(),
            "wall_seconds": wall, "world_size": world, "loss": type(loss).__name__, "similarity": similarity.__name__,
            "resumed_from": str(resume_from) if resume_from else None,
            "config": _jsonable(asdict(cfg)),
        }
        with atomic_open(out / "encoder.json") as fh:
            json.dump(_jsonable(asdict(cfg.encoder)) | {"adapter": str(out / "adapter")}, fh, indent=2)
        with atomic_open(out / "summary.json") as fh:
            json.dump(summary, fh, indent=2)
        return summary
    return {}


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))
