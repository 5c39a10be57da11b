"""Parameter-efficient tuning methods for encoders and decoders of the families in `tuning.arch.ARCHITECTURES`
(BERT family, ModernBERT, Llama, Qwen2/3, Mistral), bare or with a sequence-classification head (DESIGN §2, §7).

Public API:
    METHODS                                    name -> Method (full, bitfit, adapter, parallel, prefix, lora, mam,
                                               iaa-s, iaa-l, iaa-m)
    TuningConfig(method, r, ar, prefix_len, lora_r, lora_alpha, lora_dropout, target_modules, scaling, aside,
                 activation, train_pooler, seed)             .to_dict() / .from_dict()
    apply_tuning(model, config) -> model       freeze the base, inject modules (in place)
    trainable_parameters(model) -> (trainable, total)   share = trainable / base parameters
    head_parameters(model) -> int                       a cross-encoder's task head (trains under every method)
    head_modules(model) / pooler_parameters(model)      the head's modules; its pooler's count when the pooler trains
    budget_config(model, method, share, **fixed) -> TuningConfig   (IAA keeps the paper's ar:r; see tuning.budget)
    save_tuned(model, path, base_name_or_path) / load_tuned(base_model, path) -> model
    load_trainable(model, path) -> model       reload trainable weights into an already tuned model (resume)
    merge_tuned(model) -> model                lora (and bitfit/full); others raise PeftIRError
    base_state_dict(model) -> dict             a tuned model's base weights under the base's own names
    describe(model, config, budget_note) -> str   budget_note: budget.budget_choice(...).note
"""

from peft_ir.tuning.apply import (
    apply_tuning, base_state_dict, head_modules, head_parameters, merge_tuned, pooler_parameters, trainable_parameters,
    tuning_state,
)
from peft_ir.tuning.budget import budget_config
from peft_ir.tuning.checkpoint import load_trainable, load_tuned, save_tuned
from peft_ir.tuning.config import METHODS, Method, TuningConfig, load_methods, parse_share
from peft_ir.tuning.describe import describe

load_methods()

__all__ = [
    "METHODS",
    "Method",
    "TuningConfig",
    "apply_tuning",
    "base_state_dict",
    "budget_config",
    "describe",
    "load_trainable",
    "load_tuned",
    "merge_tuned",
    "parse_share",
    "save_tuned",
    "trainable_parameters",
    "head_modules",
    "head_parameters",
    "pooler_parameters",
    "tuning_state",
]
