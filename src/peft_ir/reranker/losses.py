"""Re-ranker losses over groups of scores (one positive first, then its negatives): one function per loss, one
registry. A new loss is a function here and an entry in LOSSES; the config's choices come from its keys."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from peft_ir.errors import PeftIRError

if TYPE_CHECKING:
    import torch


def lce(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Localised contrastive estimation: softmax cross-entropy over the group, the positive as target."""
    import torch  # noqa: PLC0415

    return torch.nn.functional.cross_entropy(scores, labels.argmax(dim=1))


def bce(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Pointwise binary cross-entropy on every pair of the group (positive 1, negatives 0)."""
    import torch  # noqa: PLC0415

    return torch.nn.functional.binary_cross_entropy_with_logits(scores, labels)


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"lce": lce, "bce": bce}


def group_loss(logits: torch.Tensor, labels: torch.Tensor, loss: str) -> torch.Tensor:
    if loss not in LOSSES:
        raise PeftIRError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[loss](logits.view(labels.shape).float(), labels)
