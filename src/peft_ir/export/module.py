"""A sentence-transformers module that is the base model plus peft-ir's tuning, for methods with no merged form.

An export of an adapter, prefix, MAM, parallel or IAA model (or LoRA kept unmerged) is a standard
sentence-transformers folder (SentenceTransformer or CrossEncoder) whose first module is `PeftIRTransformer`: the
untouched base weights and tokenizer in the folder's root, as sentence-transformers' own `Transformer` saves them,
and the tuned weights beside them in `peft_ir_tuning/` (a peft-ir tuning checkpoint: safetensors + JSON). Loading
rebuilds the base and applies the tuning with `load_tuned`, which checks the base's fingerprint.

sentence-transformers ≥ 6 imports a module class outside its own namespace only with the `trust_remote_code` flag on
(even from a local folder). The folder holds no code, so that flag would import nothing but this installed class;
`load_model` avoids the flag altogether: it maps this class's name in modules.json to the class itself, and every
other name in modules.json still meets sentence-transformers' usual check.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from sentence_transformers.base.modules import Transformer
from torch import nn

from peft_ir.errors import PeftIRError
from peft_ir.tuning import base_state_dict, load_tuned, save_tuned
from peft_ir.tuning.arch import detect
from peft_ir.tuning.checkpoint import read_checkpoint_meta

TUNING_DIR = "peft_ir_tuning"


class PeftIRTransformer(Transformer):
    """sentence-transformers' Transformer (base weights, tokenizer, task, lengths) with peft-ir tuning applied."""

    base_name: str = ""
    base_head: dict[str, torch.Tensor]  # a task head's weights as the base had them (tuning trains the head)
    base_small: dict[str, torch.Tensor]  # every 1-D base tensor as the base had it (BitFit trains biases in place)

    @classmethod
    def tune(cls, module: Transformer, tuning: str | Path) -> PeftIRTransformer:
        """Apply the tuning checkpoint `tuning` to a Transformer holding the untouched base, and make the module
        this class. The subclass adds no state of its own, so re-typing the module keeps all it holds."""
        head = detect(module.model, train_pooler=True).head  # the modules a tuning may train besides its own
        base_head = {f"{name}.{k}": v.detach().clone() for name, m in head for k, v in m.state_dict().items()}
        base_small = {k: v.detach().clone() for k, v in module.model.state_dict().items() if v.dim() <= 1}
        training = module.model.training
        module.model = load_tuned(module.model, tuning)
        module.model.train(training)
        module.__class__ = cls
        assert isinstance(module, cls)
        module.base_head, module.base_small = base_head, base_small
        module.base_name = str(read_checkpoint_meta(tuning)["base"].get("name_or_path") or "")
        return module

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "",  # type: ignore[override]
             token: bool | str | None = None, cache_folder: str | None = None, revision: str | None = None,
             local_files_only: bool = False, **kwargs: Any) -> PeftIRTransformer:
        """The base as sentence-transformers loads it, then the tuning of `peft_ir_tuning/` applied to it."""
        module = super().load(model_name_or_path, subfolder=subfolder, token=token, cache_folder=cache_folder,
                              revision=revision, local_files_only=local_files_only, **kwargs)
        tuning = cls.load_dir_path(model_name_or_path, subfolder=f"{subfolder}/{TUNING_DIR}".lstrip("/"),
                                   token=token, cache_folder=cache_folder, revision=revision,
                                   local_files_only=local_files_only)
        if tuning is None or not Path(tuning).is_dir():
            raise PeftIRError(f"{model_name_or_path}: no {TUNING_DIR}/ folder beside the base weights of its "
                              "peft_ir PeftIRTransformer module")
        return cls.tune(module, tuning)

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        """The base weights (the base's own, under its names), tokenizer and config as Transformer saves them, and
        the tuned weights in `peft_ir_tuning/`."""
        base = base_state_dict(self.model)
        base |= {k: v for k, v in self.base_small.items() if k in base} | self.base_head  # the base's, not as trained
        self.model.save_pretrained(output_path, state_dict=base, safe_serialization=safe_serialization)
        self.processor.save_pretrained(output_path)
        self.save_config(output_path)
        save_tuned(self.model, Path(output_path) / TUNING_DIR, self.base_name or None)


CLASS_REF = f"{PeftIRTransformer.__module__}.{PeftIRTransformer.__name__}"


def model_type(path: str | Path) -> str:
    """The sentence-transformers model type a folder was saved as (SentenceTransformer or CrossEncoder)."""
    config = Path(path) / "config_sentence_transformers.json"
    if not config.is_file():
        raise PeftIRError(f"{path} is not a sentence-transformers folder (no {config.name})")
    return str(json.loads(config.read_text(encoding="utf-8")).get("model_type", "SentenceTransformer"))


def load_model(path: str | Path, **kwargs: Any) -> nn.Module:
    """A `SentenceTransformer` or `CrossEncoder` (as the folder says) from an export, peft-ir modules included.

    `kwargs` go to the model's constructor (device, ...). Without peft-ir modules this is the plain constructor."""
    from sentence_transformers import CrossEncoder, SentenceTransformer  # noqa: PLC0415

    kind = model_type(path)
    cls = {"SentenceTransformer": SentenceTransformer, "CrossEncoder": CrossEncoder}.get(kind)
    if cls is None:
        raise PeftIRError(f"{path}: model type {kind!r} is neither SentenceTransformer nor CrossEncoder")
    # Private on their side (sentence-transformers >= 6.2, pinned <7): it resolves modules.json types to classes the
    # caller has already imported. Calling load_model is that import, of the installed package; the folder holds no
    # code. Without it, SentenceTransformer(DIR) with the trust_remote_code flag on imports the same installed class.
    return cls._load_with_module_classes(str(path), {CLASS_REF: PeftIRTransformer}, **kwargs)
