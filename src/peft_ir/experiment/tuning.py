"""Turn a config section's method, budget and sizes into a TuningConfig, on the model's structure alone.

The structure is built from the model's config on the meta device (no weights read), so a budget that the method
cannot reach is reported while the config is validated, before any stage runs.
"""

from __future__ import annotations

from typing import Any

from peft_ir.experiment.config import ModelSection


def has_task_head(section: ModelSection) -> bool:
    """Whether the section's model carries a task head (a re-ranker's classifier) or is a bare encoder (a retriever,
    or a re-ranker scored by the cosine of its segments): the structure its budget is sized on."""
    return getattr(section, "head", None) == "classifier"


def resolve_tuning(section: ModelSection, seed: int) -> Any:
    """The section's TuningConfig (sizes chosen by the budget when one is set); None for a zero-shot model.

    The experiment's seed also initialises the added modules, unless `tuning.seed` says otherwise, so that runs
    that differ in seed differ in everything random."""
    from peft_ir.tuning import TuningConfig, budget_config  # noqa: PLC0415
    from peft_ir.tuning.structure import model_structure  # noqa: PLC0415

    if section.zero_shot or section.method is None:
        return None
    sizes = {"seed": seed, **section.tuning}
    if section.budget is not None:
        structure = model_structure(section.model, has_task_head(section))
        return budget_config(structure, section.method, section.budget, **sizes)
    return TuningConfig.from_dict({"method": section.method, **sizes})
