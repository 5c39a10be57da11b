"""What the training seed and `dev_seed` make of the dev split, read off a trainer that stops right after splitting."""

from __future__ import annotations

from types import ModuleType
from typing import Any, Callable

import pytest

SEED_PAIRS = [(1, 7), (2, 7), (1, None), (2, None)]  # (seed, dev_seed): a shared dev_seed, then none


class _Stop(Exception):
    """Ends training once the data is split: the split is all these tests look at."""


def dev_sets_by_seed(monkeypatch: pytest.MonkeyPatch, module: ModuleType, split: str,
                     train: Callable[[int, int | None, int], Any]) -> list[Any]:
    """The dev set `module.<split>` returns for each of SEED_PAIRS; `train(seed, dev_seed, i)` starts a training."""
    real, dev_sets = getattr(module, split), []

    def spy(*args, **kw):  # type: ignore[no-untyped-def]
        _, dev = real(*args, **kw)
        dev_sets.append(dev)
        raise _Stop

    monkeypatch.setattr(module, split, spy)
    for i, (seed, dev_seed) in enumerate(SEED_PAIRS):
        with pytest.raises(_Stop):
            train(seed, dev_seed, i)
    return dev_sets
