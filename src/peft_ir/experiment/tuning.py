"""Turn a config section's method, budget and sizes into a TuningConfig, on the model's structure alone.

The structure is built from the model's config on the meta device (no weights read), so a budget that the method
cannot reach is reported while the config is validated, before any stage runs.
"""

from __future__ import annotations

import functools
from typing import Any

from peft_ir.errors import PeftIRError
from peft_ir.experiment.config import ModelSection
from peft_ir.models import resolve_model


@functools.lru_cache(maxsize=8)
def model_structure(model: str | None, cross_encoder: bool) -> Any:
    """The model's modules on the meta device: a bi-encoder's AutoModel or a one-logit cross-encoder."""
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415

    path = resolve_model(model)
    try:
        config = transformers.AutoConfig.from_pretrained(path, num_labels=1)
    except (OSError, ValueError) as exc:
        raise PeftIRError(f"cannot load the config of model {path!r} (offline: only local folders and models "
                          f"already in the Hugging Face cache): {str(exc).splitlines()[0]}") from None
    auto = transformers.AutoModelForSequenceClassification if cross_encoder else transformers.AutoModel
    with torch.device("meta"):
        return auto.from_config(config)


def resolve_tuning(section: ModelSection, cross_encoder: bool, seed: int) -> Any:
    """The section's TuningConfig (sizes chosen by the budget when one is set); None for a zero-shot model.

    The experiment's seed also initialises the added modules, unless `tuning.seed` says otherwise, so that runs
    that differ in seed differ in everything random."""
    from peft_ir.tuning import TuningConfig, budget_config  # noqa: PLC0415

    if section.zero_shot or section.method is None:
        return None
    sizes = {"seed": seed, **section.tuning}
    if section.budget is not None:
        return budget_config(model_structure(section.model, cross_encoder), section.method, section.budget, **sizes)
    return TuningConfig.from_dict({"method": section.method, **sizes})
