"""Cross-encoder training losses over groups of scores: one class per loss, one registry.

Each training row is one query's group [positive, negative_1, ..., negative_{n}]; a batch's scores arrive as one
logit per pair and its labels as a (queries, group size) matrix with 1 at the positive. A new loss is a class here
and an entry in LOSSES: training, config validation and the choices offered to users read the registry.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from peft_ir.errors import PeftIRError

if TYPE_CHECKING:  # the CLI reads LOSSES to build its choices; torch loads only when a loss runs
    import torch


class GroupLoss(ABC):
    """A loss over each query's group of scores; called with the model's logits (one per pair) and the labels."""

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.on_groups(logits.view(labels.shape).float(), labels)

    @abstractmethod
    def on_groups(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss of scores shaped (queries, group size), in float32."""


class LocalisedContrastive(GroupLoss):
    """LCE: softmax cross-entropy over each group's scores with the positive as target."""

    def on_groups(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        from torch.nn.functional import cross_entropy  # noqa: PLC0415

        return cross_entropy(scores, labels.argmax(dim=1))


class PointwiseBinary(GroupLoss):
    """BCE: binary cross-entropy on every pair of the same groups (positive 1, negatives 0)."""

    def on_groups(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        from torch.nn.functional import binary_cross_entropy_with_logits  # noqa: PLC0415

        return binary_cross_entropy_with_logits(scores, labels)


LOSSES: dict[str, type[GroupLoss]] = {"lce": LocalisedContrastive, "bce": PointwiseBinary}


def make_loss(name: str) -> GroupLoss:
    """The registered loss `name`; a clear error naming the choices otherwise."""
    if name not in LOSSES:
        raise PeftIRError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[name]()


def group_loss(logits: torch.Tensor, labels: torch.Tensor, loss: str) -> torch.Tensor:
    """The loss `loss` (a registry name) of one batch."""
    return make_loss(loss)(logits, labels)
