"""The training losses of both model kinds: one class per loss, one registry (LOSSES), each chosen by one word.

Every loss is defined on one query's group [positive, negative_1, ..., negative_n]. s(q, d) is the model's score:
a cross-encoder's logit, or a bi-encoder's similarity (cosine for a normalising encoder, dot product otherwise: the
one search uses) divided by `temperature`. t(q, d) is a teacher's score, read from a scored training file
(data/training.py). Over a batch of queries:

- infonce (bi-encoder): cross-entropy of softmax(s) over the positive, the query's hard negatives and every other
  passage of the batch, target the positive (sentence-transformers' MultipleNegativesRankingLoss, or its cached
  GradCache form).
- lce (cross-encoder): cross-entropy of softmax(s) over the group, target the positive: InfoNCE's group-softmax
  form, without in-batch negatives.
- bce (cross-encoder): binary cross-entropy of sigmoid(s) on every pair of the group (positive 1, negatives 0),
  averaged over pairs.
- margin-mse: the mean over queries and negatives of (s(q,p) - s(q,n) - (t(q,p) - t(q,n)))^2 (Hofstaetter et al.
  2020; sentence-transformers' MarginMSELoss).
- kl: T^2 * the mean over queries of KL(softmax(t/T) || softmax(s/T)) = sum_d p_t(d) (log p_t(d) - log p_s(d)) over
  the group, T = `distill_temperature`; the T^2 keeps gradient sizes comparable across temperatures (Hinton et
  al. 2015). Exactly sentence-transformers' DistillKLDivLoss.

The bi-encoder trains with sentence-transformers' loss modules (`bi_encoder_loss`); the cross-encoder, whose
Trainer scores a group's pairs itself, calls `on_groups` (sentence-transformers' cross-encoder losses tokenize raw
text with their own model class, which ours is not). Both forms are checked against the same hand-computed values
(tests/training/test_losses.py). This module imports no torch: the CLI builds `--loss` choices from LOSSES.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from peft_ir.errors import PeftIRError

if TYPE_CHECKING:
    import torch
    from torch import nn

Kind = Literal["bi-encoder", "cross-encoder"]
BI_ENCODER: Kind = "bi-encoder"
CROSS_ENCODER: Kind = "cross-encoder"


class Loss:
    """A training loss: which model kinds it trains, whether it reads teacher scores, and its two forms."""

    name: ClassVar[str] = ""
    order: ClassVar[int] = 100  # position in listings and choices
    summary: ClassVar[str] = ""
    kinds: ClassVar[tuple[Kind, ...]] = ()
    needs_teacher: ClassVar[bool] = False
    instead: ClassVar[dict[str, str]] = {}  # for a kind it does not train: what plays its part there

    def __init__(self, temperature: float = 1.0):
        self.temperature = temperature  # the distillation temperature T (kl only)

    # -- cross-encoder: scores of each query's group --------------------------------------------------------------
    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """The loss of one batch: `logits` one per pair, `labels` (queries, group size) with 1 at the positive,
        `teacher` the teacher's scores in the same shape (distillation losses only)."""
        scores = logits.view(labels.shape).float()
        return self.on_groups(scores, labels, None if teacher is None else teacher.float())

    def on_groups(self, scores: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None) -> torch.Tensor:
        """The loss of scores shaped (queries, group size), positive first, in float32."""
        raise NotImplementedError(f"loss {self.name} has no cross-encoder form")

    # -- bi-encoder: a sentence-transformers loss module ----------------------------------------------------------
    def bi_encoder_loss(self, model: Any, *, cosine: bool, scale: float, cache_mini_batch: int | None = None,
                        gather: bool = False) -> nn.Module:
        """The sentence-transformers loss for `model`; scores are cosine (or dot) similarities times `scale`."""
        raise NotImplementedError(f"loss {self.name} has no bi-encoder form")

    def teacher(self, teacher: torch.Tensor | None) -> torch.Tensor:
        if teacher is None:
            raise PeftIRError(f"loss {self.name} needs teacher scores, and the batch has none")
        return teacher


LOSSES: dict[str, type[Loss]] = {}


def register(cls: type[Loss]) -> type[Loss]:
    """Class decorator: add a loss to LOSSES under its name (kept in `order`)."""
    if not cls.name or cls.name in LOSSES or not cls.kinds:
        raise ValueError(f"loss {cls.name!r} is unnamed, registered twice or trains no model kind")
    LOSSES[cls.name] = cls
    ordered = sorted(LOSSES.items(), key=lambda item: (item[1].order, item[0]))
    LOSSES.clear()
    LOSSES.update(ordered)
    return cls


def _pairwise(cosine: bool, scale: float) -> Any:
    """Per-row similarity of two equally long batches of vectors, times `scale` (the student's score)."""
    from sentence_transformers.util import pairwise_cos_sim, pairwise_dot_score  # noqa: PLC0415

    return ScaledSimilarity(pairwise_cos_sim if cosine else pairwise_dot_score, scale)


class ScaledSimilarity:
    """A similarity function times a constant: the bi-encoder's score s = similarity / temperature."""

    def __init__(self, fn: Any, scale: float):
        self.fn, self.scale = fn, scale
        self.__name__ = f"{fn.__name__}*{scale:g}"

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.fn(a, b) * self.scale


@register
class InfoNCE(Loss):
    name = "infonce"
    order = 10
    summary = "softmax cross-entropy over the positive, hard and in-batch negatives"
    kinds = (BI_ENCODER,)
    instead = {CROSS_ENCODER: "lce is its group-softmax form for cross-encoders"}

    def bi_encoder_loss(self, model: Any, *, cosine: bool, scale: float, cache_mini_batch: int | None = None,
                        gather: bool = False) -> nn.Module:
        from sentence_transformers.sentence_transformer.losses import (  # noqa: PLC0415
            CachedMultipleNegativesRankingLoss, MultipleNegativesRankingLoss,
        )
        from sentence_transformers.util import cos_sim, dot_score  # noqa: PLC0415

        similarity = cos_sim if cosine else dot_score
        if cache_mini_batch:
            return CachedMultipleNegativesRankingLoss(model, scale=scale, similarity_fct=similarity,
                                                      mini_batch_size=cache_mini_batch, gather_across_devices=gather)
        return MultipleNegativesRankingLoss(model, scale=scale, similarity_fct=similarity,
                                            gather_across_devices=gather)


@register
class LocalisedContrastive(Loss):
    name = "lce"
    order = 20
    summary = "softmax cross-entropy over each group (positive and its negatives)"
    kinds = (CROSS_ENCODER,)
    instead = {BI_ENCODER: "infonce is the bi-encoder's form (it adds in-batch negatives)"}

    def on_groups(self, scores: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None) -> torch.Tensor:
        from torch.nn.functional import cross_entropy  # noqa: PLC0415

        return cross_entropy(scores, labels.argmax(dim=1))


@register
class PointwiseBinary(Loss):
    name = "bce"
    order = 30
    summary = "pointwise binary cross-entropy on every pair (positive 1, negatives 0)"
    kinds = (CROSS_ENCODER,)

    def on_groups(self, scores: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None) -> torch.Tensor:
        from torch.nn.functional import binary_cross_entropy_with_logits  # noqa: PLC0415

        return binary_cross_entropy_with_logits(scores, labels)


@register
class MarginMSE(Loss):
    name = "margin-mse"
    order = 40
    summary = "distillation: squared error between the model's and the teacher's positive-negative margins"
    kinds = (BI_ENCODER, CROSS_ENCODER)
    needs_teacher = True

    def on_groups(self, scores: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None) -> torch.Tensor:
        from torch.nn.functional import mse_loss  # noqa: PLC0415

        t = self.teacher(teacher)
        return mse_loss(scores[:, :1] - scores[:, 1:], t[:, :1] - t[:, 1:])

    def bi_encoder_loss(self, model: Any, *, cosine: bool, scale: float, cache_mini_batch: int | None = None,
                        gather: bool = False) -> nn.Module:
        from sentence_transformers.sentence_transformer.losses import MarginMSELoss  # noqa: PLC0415

        return MarginMSELoss(model, similarity_fct=_pairwise(cosine, scale))


@register
class ListwiseKL(Loss):
    name = "kl"
    order = 50
    summary = "distillation: KL divergence from the teacher's softmax over each group to the model's, at a temperature"
    kinds = (BI_ENCODER, CROSS_ENCODER)
    needs_teacher = True

    def on_groups(self, scores: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None) -> torch.Tensor:
        from torch.nn.functional import kl_div, log_softmax, softmax  # noqa: PLC0415

        t, temp = self.teacher(teacher), self.temperature
        loss = kl_div(log_softmax(scores / temp, dim=1), softmax(t / temp, dim=1), reduction="batchmean")
        return loss * temp ** 2

    def bi_encoder_loss(self, model: Any, *, cosine: bool, scale: float, cache_mini_batch: int | None = None,
                        gather: bool = False) -> nn.Module:
        from sentence_transformers.sentence_transformer.losses import DistillKLDivLoss  # noqa: PLC0415

        return DistillKLDivLoss(model, similarity_fct=_pairwise(cosine, scale), temperature=self.temperature)


# -- choosing a loss ----------------------------------------------------------------------------------------------
def loss_names(kind: Kind) -> tuple[str, ...]:
    """The losses that train `kind`, in listing order (the `--loss` choices)."""
    return tuple(name for name, cls in LOSSES.items() if kind in cls.kinds)


def loss_help(kind: Kind) -> str:
    """The `loss` setting's help text for `kind`: each choice with its one-line summary."""
    names = loss_names(kind)
    distilling = " and ".join(name for name in names if LOSSES[name].needs_teacher)
    return "; ".join(f"{name}: {LOSSES[name].summary}" for name in names) + \
        f" ({distilling} need a scored training file)"


def get_loss(name: str, kind: Kind) -> type[Loss]:
    """The registered loss `name` for `kind`; a wrong name or kind is refused naming the choices."""
    choices = ", ".join(loss_names(kind))
    if name not in LOSSES:
        raise PeftIRError(f"unknown loss {name!r}; choose one of {choices}")
    cls = LOSSES[name]
    if kind not in cls.kinds:
        hint = f" ({cls.instead[kind]})" if kind in cls.instead else ""
        raise PeftIRError(f"loss {name!r} does not train a {kind}{hint}; choose one of {choices}")
    return cls


def make_loss(name: str, kind: Kind, temperature: float = 1.0) -> Loss:
    """The loss `name` for `kind`, with its distillation temperature."""
    return get_loss(name, kind)(temperature=temperature)


def check_loss(name: str, kind: Kind, train: str, temperature: float) -> type[Loss]:
    """Refuse a loss that does not fit the model kind or the training data, before anything is loaded: a
    distillation loss needs a scored training file (a BEIR folder, or a file of another shape, has no teacher
    scores)."""
    cls = get_loss(name, kind)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 < temperature < float("inf"):
        raise PeftIRError(f"--distill-temperature must be a positive number; got {temperature!r}")
    if cls.needs_teacher:
        refuse_without_teacher(name, train)
    return cls


def refuse_without_teacher(name: str, train: str) -> None:
    """A distillation loss `name` trains on teacher scores: refuse training data that has none."""
    from peft_ir.data.training import detect_shape  # noqa: PLC0415

    path = Path(train)
    why = "give a scored training file (teacher scores per passage, as `peft-ir annotate` writes)"
    if path.is_dir():
        raise PeftIRError(f"loss {name} distils teacher scores, and the BEIR folder {train} has none: {why}")
    if not path.is_file():
        return  # reading the examples reports the missing file
    shape = detect_shape(path)
    if shape != "scored":
        raise PeftIRError(f"loss {name} distils teacher scores, and {train} is a {shape} training file without "
                          f"them: {why}")
