"""A model's modules without its weights, for counting parameters and choosing sizes for a budget.

Built from the model's config on the meta device, so nothing but the config is read: a budget the method cannot
reach is reported while a config is validated or a method described, in milliseconds and offline.
"""

from __future__ import annotations

import functools

from torch import nn

from peft_ir.errors import PeftIRError
from peft_ir.models import BERT_BASE_CONFIG, resolve_model


@functools.lru_cache(maxsize=8)
def model_structure(model: str | None, cross_encoder: bool) -> nn.Module:
    """The model's modules on the meta device: a bi-encoder's AutoModel or a one-logit cross-encoder.

    `model` is resolved as everywhere (None: the embedded all-MiniLM-L6-v2); BERT_BASE_CONFIG builds BERT-base from
    `transformers.BertConfig()`, the paper's model, which needs no download. Callers share the cached object: do
    not change it.
    """
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415

    if model == BERT_BASE_CONFIG:
        config = transformers.BertConfig(num_labels=1)
        config._name_or_path = BERT_BASE_CONFIG
    else:
        path = resolve_model(model)
        try:
            config = transformers.AutoConfig.from_pretrained(path, num_labels=1)
        except (OSError, ValueError) as exc:
            raise PeftIRError(f"cannot load the config of model {path!r} (offline: only local folders and models "
                              f"already in the Hugging Face cache): {str(exc).splitlines()[0]}") from None
    auto = transformers.AutoModelForSequenceClassification if cross_encoder else transformers.AutoModel
    with torch.device("meta"):
        return auto.from_config(config)
