"""Cross-encoder training with any tuning method on the Hugging Face Trainer.

Each training row is one query's group: one positive and n = group_size - 1 negatives sampled from the top-k
non-relevant hits of a first-stage run, or from a training file's own negatives; the losses over those groups
(lce, bce, margin-mse, kl) are in training/losses.py, one class each, named in its LOSSES registry. A distillation
loss reads the teacher's score of every passage of the group from a scored training file.
A dev split is carved from the training queries (seeded); the dev metric is nDCG@10 (ir-measures) of re-ranking
each dev query's candidates (its positives and mined negatives). Checkpoints hold only the trainable weights
(method modules + classification head) and the Trainer state; `resume` continues from the last complete one.
The new head trains under every method at its own learning rate (`head_lr`; by default the PEFT rate, so that full
fine-tuning's 2e-5 for the pretrained weights does not starve a head that starts from nothing). A pretrained
pooler stays frozen (`tuning.train_pooler`); one its checkpoint never trained (MiniLM's) trains with the head.
Writes `<output>/adapter`, metrics.jsonl, curves.png, summary.json, cross_encoder.json.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from peft_ir.data import TrainingExample
from peft_ir.data.dev_split import RerankDevSet, first_queries, split_examples
from peft_ir.data.examples import load_examples
from peft_ir.errors import PeftIRError
from peft_ir.reranker.config import CROSS_ENCODER_SPEC_FILE, RerankerTrainConfig
from peft_ir.reranker.model import CrossEncoder, describe_spec
from peft_ir.training.args import eval_autocast
from peft_ir.training.losses import CROSS_ENCODER, Loss, make_loss
from peft_ir.training.skeleton import TrainingTask, run_training
from peft_ir.training.tuned import TrainableOnlyCheckpoints
from peft_ir.tuning import apply_tuning, head_modules, head_parameters, pooler_parameters, trainable_parameters

log = logging.getLogger(__name__)

DEV_METRIC = "eval_dev_nDCG@10"




def dev_ndcg(encoder: CrossEncoder, dev: RerankDevSet, batch_size: int = 64) -> float:
    values = dev_scores(encoder, dev, batch_size)
    return sum(values.values()) / len(values)


def dev_scores(encoder: CrossEncoder, dev: RerankDevSet, batch_size: int = 64) -> dict[str, float]:
    """nDCG@10 of re-ranking each dev query's candidates, per query (what model selection's paired test reads)."""
    from peft_ir.eval import parse_measures, per_query  # noqa: PLC0415

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
    return per_query(dev.qrels, run, measures)[str(measures[0])]


def build_groups(examples: list[TrainingExample], group_size: int, seed: int, teacher: bool = False
                 ) -> list[dict[str, Any]]:
    """One row per (query, positive): [positive, negatives...] of length group_size, negatives sampled (seeded);
    queries with fewer mined negatives than needed sample with replacement; queries with none are skipped.
    With `teacher`, each row also holds the teacher's scores of its passages, in the same order."""
    if group_size < 2:
        raise PeftIRError(f"--group-size must be at least 2 (one positive, one negative), got {group_size}")
    rng = random.Random(seed)
    rows, skipped = [], 0
    for ex in examples:
        if teacher and not ex.scored:
            raise PeftIRError(f"training query {ex.query_id or ex.query!r} has no teacher scores")
        first: dict[str, int] = {}  # each distinct negative text, at its first position (and score)
        for i, n in enumerate(ex.negatives):
            if n not in ex.positives:
                first.setdefault(n, i)
        negs = list(first)
        if not negs:
            skipped += 1
            continue
        for j, pos in enumerate(ex.positives):
            k = group_size - 1
            # sampling positions draws exactly what sampling the texts would: rng.sample / choices read only len()
            picked = rng.sample(range(len(negs)), k) if len(negs) >= k else rng.choices(range(len(negs)), k=k)
            row: dict[str, Any] = {"query": ex.query, "passages": [pos, *(negs[i] for i in picked)]}
            if teacher:
                scores = ex.negative_scores or []
                row["teacher"] = [(ex.positive_scores or [])[j], *(scores[first[negs[i]]] for i in picked)]
            rows.append(row)
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
        if "teacher" in rows[0]:
            batch["teacher"] = torch.tensor([r["teacher"] for r in rows], dtype=torch.float32)
        return batch


class DevNDCG:
    """The dev evaluation: nDCG@10 of re-ranking each dev query's candidates with the model being trained."""

    def __init__(self, encoder: CrossEncoder, dev: RerankDevSet, batch_size: int):
        self.encoder, self.dev, self.batch_size = encoder, dev, batch_size
        self.per_query: dict[str, float] = {}  # the latest evaluation's value per dev query (model selection)

    def __call__(self) -> float:
        self.per_query = dev_scores(self.encoder, self.dev, self.batch_size)
        return sum(self.per_query.values()) / len(self.per_query)


def _trainer_class():  # type: ignore[no-untyped-def]
    from transformers import Trainer  # noqa: PLC0415

    class RerankerTrainer(TrainableOnlyCheckpoints, Trainer):
        """Group losses over (query, positive, negatives) rows, the head at its own learning rate, dev nDCG@10."""

        def __init__(self, *args: Any, loss: Loss, evaluator: DevNDCG | None,
                     forward_scores: Callable[..., torch.Tensor], head_params: list[torch.nn.Parameter],
                     head_lr: float, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.group_loss = loss
            self.forward_scores = forward_scores
            self.dev_evaluator = evaluator
            self.head_params = head_params
            self.head_lr = head_lr
            self.head_grouped = False

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[no-untyped-def]
            labels, teacher = inputs.pop("labels"), inputs.pop("teacher", None)
            scores = self.forward_scores(model, inputs)  # through the (possibly DDP-wrapped) model
            loss = self.group_loss(scores, labels, teacher)
            return (loss, scores) if return_outputs else loss

        def create_optimizer(self, model=None):  # type: ignore[no-untyped-def]
            optimizer = super().create_optimizer(model)
            if not self.head_grouped:
                own_lr_groups(optimizer, self.head_params, self.head_lr)
                self.head_grouped = True
            return optimizer

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):  # type: ignore[no-untyped-def]
            with eval_autocast(self.args):
                value = self.shared_dev_ndcg()
            metrics = {f"{metric_key_prefix}_dev_nDCG@10": value}
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

        def shared_dev_ndcg(self) -> float:
            """Dev nDCG@10, computed on rank 0 (the ranks hold the same weights: once is enough) and broadcast, so
            that every rank keeps the same best checkpoint."""
            assert self.dev_evaluator is not None, "evaluate() without dev queries"
            if self.args.world_size <= 1:
                return self.dev_evaluator()
            value = [self.dev_evaluator() if self.is_world_process_zero() else None]
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
    top_k = cfg.dev_candidates if cfg.has_dev() else 0  # the first stage's hits for the dev candidates
    examples, _ = load_examples(cfg.train, cfg.split, cfg.negatives_run, depth_from=cfg.negatives_window[0],
                                depth_to=cfg.negatives_window[1], num_negatives=cfg.negatives_pool,
                                seed=cfg.dev_split_seed(), limit=cfg.read_limit(), first_stage_depth=top_k)
    return examples


def held_out_dev(cfg: RerankerTrainConfig) -> RerankDevSet:
    """The dev queries a training under `cfg` holds out (and selects its checkpoint on), rebuilt by the very calls
    that training makes, so that a later stage (the fusion weight chosen on dev) judges exactly those queries."""
    _, dev = split_examples(load_training_examples(cfg), cfg.dev_queries, cfg.dev_split_seed(), cfg.dev_candidates)
    return dev


class RerankerTask(TrainingTask):
    """A cross-encoder under a loss of the registry (training/losses.py) on the HF Trainer, its new head at its own
    rate, dev nDCG@10."""

    spec_file = CROSS_ENCODER_SPEC_FILE
    dev_metric = DEV_METRIC

    def __init__(self, cfg: RerankerTrainConfig):
        self.cfg = cfg
        # an unknown loss, or one that is not a cross-encoder's, is refused before anything else
        self.group_loss = make_loss(cfg.loss, CROSS_ENCODER, cfg.distill_temperature)

    def load_data(self) -> Any:
        cfg = self.cfg
        examples = load_training_examples(cfg)
        self.train_ex, self.dev = split_examples(examples, cfg.dev_queries, cfg.dev_split_seed(), cfg.dev_candidates)
        if cfg.max_queries is not None:
            self.train_ex = first_queries(self.train_ex, cfg.max_queries)  # already in seeded-shuffle order
        self.rows = build_groups(self.train_ex, cfg.group_size, cfg.seed, teacher=self.group_loss.needs_teacher)
        return self.rows

    def build_model(self, device: str) -> torch.nn.Module:
        cfg = self.cfg
        self.encoder = CrossEncoder(cfg.cross_encoder, device=device)
        self.encoder.log_truncated([r["query"] for r in self.rows], [p for r in self.rows for p in r["passages"]],
                                   "training")
        self.tuning = cfg.tuning
        resolved = self.tuning.train_pooler is None
        if resolved:  # (the cosine head's bare encoder has no task head for a pooler to join)
            self.tuning = self.tuning.replace(train_pooler=cfg.cross_encoder.classifies
                                              and not self.encoder.pooler_pretrained)
        self.tuned = apply_tuning(self.encoder.model, self.tuning)
        self.counts = trainable_parameters(self.tuned), head_parameters(self.tuned), pooler_parameters(self.tuned)
        if resolved and self.counts[2]:  # a model without a pooler (RoBERTa's, ModernBERT's heads) has none to say
            log.info("the pooler of %s was never trained by its checkpoint: it trains with the head",
                     describe_spec(cfg.cross_encoder)["model"])
        return self.tuned

    @property
    def base_name(self) -> str | None:
        return self.cfg.cross_encoder.model or describe_spec(self.cfg.cross_encoder)["model"]

    def loss(self) -> Loss:
        return self.group_loss

    def evaluator(self) -> DevNDCG | None:
        return DevNDCG(self.encoder, self.dev, self.cfg.eval_batch_size) if self.cfg.has_dev() else None

    def dev_per_query(self) -> dict[str, float]:
        return dev_scores(self.encoder, self.dev, self.cfg.eval_batch_size)

    def training_arguments(self, common: dict[str, Any]) -> Any:
        from transformers import TrainingArguments  # noqa: PLC0415

        return TrainingArguments(**common, remove_unused_columns=False)

    def trainer_class(self) -> type:
        return _trainer_class()

    def trainer_kwargs(self, loss: Any, evaluator: Any) -> dict[str, Any]:
        return {"model": self.tuned, "eval_dataset": [0] if self.cfg.has_dev() else None,
                "data_collator": GroupCollator(self.encoder), "loss": loss, "evaluator": evaluator,
                "forward_scores": self.encoder.forward_scores,
                "head_params": [p for _, m in head_modules(self.tuned) for p in m.parameters()],
                "head_lr": self.cfg.head_learning_rate()}

    def summary_fields(self, trainer: Any) -> dict[str, Any]:
        cfg = self.cfg
        (trainable, total), head, pooler = self.counts
        return {"loss": cfg.loss, "method_share": (trainable - head) / total, "head_share": head / total,
                "pooler_share": pooler / total, "train_pooler": self.tuning.train_pooler, "lr": cfg.learning_rate(),
                "head_lr": cfg.head_learning_rate(), "train_groups": len(self.rows),
                "train_queries": len(self.train_ex), "dev_queries": len(self.dev.queries),
                "dev_pairs": sum(len(c) for c in self.dev.candidates.values())}

    def curve_title(self, share: float) -> str:
        return f"{self.cfg.tuning.method} cross-encoder, {self.cfg.loss} ({share:.2%} trainable)"

    def spec(self) -> CrossEncoderSpec:
        return self.cfg.cross_encoder


def train_reranker(cfg: RerankerTrainConfig) -> dict[str, Any]:
    """Train, keep the best dev checkpoint (or the last step without dev queries), write the adapter, metrics,
    curves, cross_encoder.json and summary; returns the summary (under torchrun: on rank 0, which alone writes;
    {} on the others)."""
    return run_training(cfg, RerankerTask(cfg))
