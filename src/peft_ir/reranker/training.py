"""Cross-encoder training with any tuning method on the Hugging Face Trainer.

Losses (per query: one positive and n = group_size - 1 negatives sampled from the top-k non-relevant hits of a
first-stage run, or from a training file's own negatives):
- lce: localised contrastive estimation, softmax cross-entropy over the group's scores with the positive as target;
- bce: pointwise binary cross-entropy on every pair of the same groups (positive 1, negatives 0).
A dev split is carved from the training queries (seeded); the dev metric is nDCG@10 (ir-measures) of re-ranking
each dev query's candidates (its positives and mined negatives). Checkpoints hold only the trainable weights
(method modules + classification head) and the Trainer state; `resume` continues from the last complete one.
The new head trains under every method at its own learning rate (`head_lr`; by default the PEFT rate, so that full
fine-tuning's 2e-5 for the pretrained weights does not starve a head that starts from nothing). A pretrained
pooler stays frozen (`tuning.train_pooler`); one its checkpoint never trained (MiniLM's) trains with the head.
Writes `<output>/adapter`, metrics.jsonl, curves.png, summary.json, cross_encoder.json.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from peft_ir.atomic import atomic_open
from peft_ir.data import TrainingExample
from peft_ir.data.dev_split import RerankDevSet, split_examples
from peft_ir.data.examples import load_examples
from peft_ir.devices import device_for_process, log_device
from peft_ir.errors import PeftIRError
from peft_ir.reranker.model import CrossEncoder, CrossEncoderSpec, describe_spec
from peft_ir.training.checkpoints import prepare_run_dir
from peft_ir.training.logging import JsonlMetrics, plot_curves
from peft_ir.training.args import PEFT_LR, ScheduleConfig, common_trainer_args
from peft_ir.training.tuned import TrainableOnlyCheckpoints
from peft_ir.tuning import (
    apply_tuning, head_modules, head_parameters, pooler_parameters, save_tuned, trainable_parameters,
)

log = logging.getLogger(__name__)

LOSSES = ("lce", "bce")
DEV_METRIC = "eval_dev_nDCG@10"


@dataclass(kw_only=True)
class RerankerTrainConfig(ScheduleConfig):
    negatives_pool: int = 32                    # negatives kept per query to sample groups (and dev candidates) from
    cross_encoder: CrossEncoderSpec = field(default_factory=CrossEncoderSpec)
    loss: str = "lce"
    group_size: int = 8                         # 1 positive + group_size - 1 negatives per query
    batch_size: int = 8                         # queries per device per step
    max_queries: int | None = None              # use only this many training queries (seeded); None = all
    dev_candidates: int = 30                    # candidates re-ranked per dev query
    eval_batch_size: int = 64
    head_lr: float | None = None                # None: the run's rate for PEFT methods, 1e-3 under full fine-tuning

    def head_learning_rate(self) -> float:
        if self.head_lr is not None:
            return self.head_lr
        return PEFT_LR if self.tuning.method == "full" else self.learning_rate()


def dev_ndcg(encoder: CrossEncoder, dev: RerankDevSet, batch_size: int = 64) -> float:
    from peft_ir.eval import evaluate, parse_measures  # noqa: PLC0415

    qs, ps, keys = [], [], []
    for qid, cands in dev.candidates.items():
        for j, text in enumerate(cands):
            qs.append(dev.queries[qid])
            ps.append(text)
            keys.append((qid, str(j)))
    scores = encoder.score(qs, ps, batch_size)
    run: dict[str, dict[str, float]] = {}
    for (qid, j), s in zip(keys, scores):
        run.setdefault(qid, {})[j] = s
    measures = parse_measures(["nDCG@10"])
    return float(evaluate(dev.qrels, run, measures)[str(measures[0])])


def build_groups(examples: list[TrainingExample], group_size: int, seed: int) -> list[dict[str, Any]]:
    """One row per (query, positive): [positive, negatives...] of length group_size, negatives sampled (seeded);
    queries with fewer mined negatives than needed sample with replacement; queries with none are skipped."""
    if group_size < 2:
        raise PeftIRError(f"--group-size must be at least 2 (one positive, one negative), got {group_size}")
    rng = random.Random(seed)
    rows, skipped = [], 0
    for ex in examples:
        negs = list(dict.fromkeys(n for n in ex.negatives if n not in ex.positives))
        if not negs:
            skipped += 1
            continue
        for pos in ex.positives:
            k = group_size - 1
            picked = rng.sample(negs, k) if len(negs) >= k else rng.choices(negs, k=k)
            rows.append({"query": ex.query, "passages": [pos, *picked]})
    if skipped:
        log.warning("%d of %d training queries have no negative and are skipped", skipped, len(examples))
    if not rows:
        raise PeftIRError("no usable training example (each needs a positive and at least one negative; "
                          "give a BEIR folder with --negatives-run, or a training file with negatives)")
    return rows


class GroupCollator:
    def __init__(self, encoder: CrossEncoder):
        self.encoder = encoder

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        qs = [r["query"] for r in rows for _ in r["passages"]]
        ps = [p for r in rows for p in r["passages"]]
        batch = self.encoder.collate(self.encoder.pair_ids(qs, ps))
        g = len(rows[0]["passages"])
        labels = torch.zeros((len(rows), g))
        labels[:, 0] = 1.0
        batch["labels"] = labels
        return batch


def group_loss(logits: torch.Tensor, labels: torch.Tensor, loss: str) -> torch.Tensor:
    scores = logits.view(labels.shape).float()
    if loss == "lce":
        return torch.nn.functional.cross_entropy(scores, labels.argmax(dim=1))
    if loss == "bce":
        return torch.nn.functional.binary_cross_entropy_with_logits(scores, labels)
    raise PeftIRError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")


def _trainer_class():  # type: ignore[no-untyped-def]
    from transformers import Trainer  # noqa: PLC0415

    class RerankerTrainer(TrainableOnlyCheckpoints, Trainer):
        peft_ir_loss = "lce"
        peft_ir_encoder: CrossEncoder
        peft_ir_dev: RerankDevSet
        peft_ir_eval_batch = 64
        peft_ir_head_params: list[torch.nn.Parameter] = []
        peft_ir_head_lr = PEFT_LR
        peft_ir_head_grouped = False

        def tuned_model(self):  # type: ignore[no-untyped-def]
            return self.peft_ir_encoder.model

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[no-untyped-def]
            labels = inputs.pop("labels")
            out = model(**inputs)
            loss = group_loss(out.logits[:, 0], labels, self.peft_ir_loss)
            return (loss, out) if return_outputs else loss

        def create_optimizer(self, model=None):  # type: ignore[no-untyped-def]
            optimizer = super().create_optimizer(model)
            if not self.peft_ir_head_grouped:
                own_lr_groups(optimizer, self.peft_ir_head_params, self.peft_ir_head_lr)
                self.peft_ir_head_grouped = True
            return optimizer

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):  # type: ignore[no-untyped-def]
            value = self.shared_dev_ndcg()
            metrics = {f"{metric_key_prefix}_dev_nDCG@10": value}
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

        def shared_dev_ndcg(self) -> float:
            """Dev nDCG@10, computed on rank 0 (the ranks hold the same weights: once is enough) and broadcast, so
            that every rank keeps the same best checkpoint."""
            if self.args.world_size <= 1:
                return dev_ndcg(self.peft_ir_encoder, self.peft_ir_dev, self.peft_ir_eval_batch)
            value = [dev_ndcg(self.peft_ir_encoder, self.peft_ir_dev, self.peft_ir_eval_batch)
                     if self.is_world_process_zero() else None]
            torch.distributed.broadcast_object_list(value, src=0)
            return float(value[0])  # type: ignore[arg-type]

    return RerankerTrainer


def own_lr_groups(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], lr: float) -> None:
    """Move `params` out of the optimizer's groups into groups of their own at rate `lr` (one per original group,
    keeping its other options, e.g. weight decay); the schedule then scales each group from its own rate."""
    ids = {id(p) for p in params}
    own = []
    for group in optimizer.param_groups:
        mine = [p for p in group["params"] if id(p) in ids]
        if mine:
            group["params"] = [p for p in group["params"] if id(p) not in ids]
            own.append({**group, "params": mine, "lr": lr})
    optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]]
    for group in own:
        optimizer.add_param_group(group)


def load_training_examples(cfg: RerankerTrainConfig) -> list[TrainingExample]:
    examples, _ = load_examples(cfg.train, cfg.split, cfg.negatives_run, depth_from=cfg.negatives_from,
                                depth_to=cfg.negatives_to, num_negatives=cfg.negatives_pool,
                                seed=cfg.dev_split_seed())
    return examples


def train_reranker(cfg: RerankerTrainConfig) -> dict[str, Any]:
    """Train, keep the best dev checkpoint (or the last step without dev queries), write the adapter, metrics,
    curves and summary; returns the summary (under torchrun: on rank 0, which alone writes; {} on the others)."""
    from transformers import TrainingArguments, set_seed  # noqa: PLC0415

    if cfg.loss not in LOSSES:
        raise PeftIRError(f"unknown loss {cfg.loss!r}; choose one of {', '.join(LOSSES)}")
    cfg.check()
    device = device_for_process()  # this rank's GPU under torchrun: the model is built there, not on GPU 0
    out, ckpt_dir, resume_from = prepare_run_dir(cfg.output, cfg.resume)

    set_seed(cfg.seed)
    examples = load_training_examples(cfg)
    train_ex, dev = split_examples(examples, cfg.dev_queries, cfg.dev_split_seed(), cfg.dev_candidates)
    if cfg.max_queries is not None:
        train_ex = train_ex[:cfg.max_queries]  # already in seeded-shuffle order
    rows = build_groups(train_ex, cfg.group_size, cfg.seed)
    if not cfg.has_dev():
        log.info("--dev-queries 0: no dev evaluation; the weights of the last step are kept")

    log_device("training", device)
    encoder = CrossEncoder(cfg.cross_encoder, device=device)
    tuning = cfg.tuning
    if tuning.train_pooler is None:
        tuning = tuning.replace(train_pooler=not encoder.pooler_pretrained)
        if tuning.train_pooler:
            log.info("the pooler of %s was never trained by its checkpoint: it trains with the head",
                     describe_spec(cfg.cross_encoder)["model"])
    tuned = apply_tuning(encoder.model, tuning)
    trainable, total = trainable_parameters(tuned)
    head, pooler = head_parameters(tuned), pooler_parameters(tuned)
    base_name = cfg.cross_encoder.model or describe_spec(cfg.cross_encoder)["model"]

    args = TrainingArguments(**common_trainer_args(cfg, ckpt_dir, DEV_METRIC), remove_unused_columns=False)
    trainer = _trainer_class()(model=tuned, args=args, train_dataset=rows,
                               eval_dataset=[0] if cfg.has_dev() else None, data_collator=GroupCollator(encoder),
                               callbacks=[JsonlMetrics(out / "metrics.jsonl")])
    trainer.peft_ir_base = base_name
    trainer.peft_ir_loss = cfg.loss
    trainer.peft_ir_encoder = encoder
    trainer.peft_ir_dev = dev
    trainer.peft_ir_eval_batch = cfg.eval_batch_size
    trainer.peft_ir_head_params = [p for _, m in head_modules(tuned) for p in m.parameters()]
    trainer.peft_ir_head_lr = cfg.head_learning_rate()
    t0 = time.perf_counter()
    if resume_from is None and cfg.has_dev():
        trainer.evaluate()  # the zero-step point of the curve: the untrained model (new head)
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    wall = time.perf_counter() - t0
    if not trainer.is_world_process_zero():  # one rank writes: two renaming onto one adapter folder collide
        return {}
    final_dev = dev_ndcg(encoder, dev, cfg.eval_batch_size) if cfg.has_dev() else None

    save_tuned(tuned, out / "adapter", base_name)
    plot_curves(out / "metrics.jsonl", out / "curves.png", DEV_METRIC,
                title=f"{cfg.tuning.method} cross-encoder, {cfg.loss} ({trainable / total:.2%} trainable)")
    summary = {
        "method": cfg.tuning.method, "loss": cfg.loss, "trainable": trainable, "total": total,
        "share": trainable / total, "method_share": (trainable - head) / total, "head_share": head / total,
        "pooler_share": pooler / total, "train_pooler": tuning.train_pooler, "lr": cfg.learning_rate(),
        "head_lr": cfg.head_learning_rate(), "steps": trainer.state.global_step,
        "best_checkpoint": trainer.state.best_model_checkpoint, "best_dev": trainer.state.best_metric,
        "final_dev": final_dev, "dev_metric": DEV_METRIC if cfg.has_dev() else None,
        "selection": "best dev" if cfg.has_dev() else "last step (no dev queries)", "train_groups": len(rows),
        "train_queries": len(train_ex), "dev_queries": len(dev.queries), "dev_seed": cfg.dev_split_seed(),
        "dev_pairs": sum(len(c) for c in dev.candidates.values()), "wall_seconds": wall,
        "world_size": trainer.args.world_size,
        "resumed_from": str(resume_from) if resume_from else None, "config": _jsonable(asdict(cfg)),
    }
    with atomic_open(out / "cross_encoder.json") as fh:
        json.dump(_jsonable(asdict(cfg.cross_encoder)) | {"adapter": str(out / "adapter")}, fh, indent=2)
    with atomic_open(out / "summary.json") as fh:
        json.dump(summary, fh, indent=2)
    return summary


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))
