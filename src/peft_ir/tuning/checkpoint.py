"""Save and load the trainable weights of a tuned model (safetensors + JSON, never pickle).

A checkpoint directory holds:
- tuning_config.json: the TuningConfig, the base model's name/path, class and fingerprint, and the counts;
- tuning_weights.safetensors: every trainable tensor under its name in the tuned model (for `lora`: only those
  that peft does not carry, e.g. aside modules; absent when empty);
- for `lora` also adapter_config.json + adapter_model.safetensors in peft's own format (LoRA weights and the task
  head as modules_to_save), so `peft.PeftModel.from_pretrained(base, path)` loads it without peft-ir.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from peft_ir.atomic import atomic_path
from peft_ir.errors import InputError, MismatchError, PeftIRError
from peft_ir.fingerprint import base_fingerprint
from peft_ir.tuning.apply import apply_tuning, detect_tuned, trainable_parameters, tuning_state
from peft_ir.tuning.config import TuningConfig
from peft_ir.tuning.methods.lora import PEFT_ADAPTER

FORMAT = "peft-ir-tuning"
FORMAT_VERSION = 1
ADAPTER_DIR = "adapter"  # the folder a training output (and each of its checkpoints) keeps these files in
CONFIG_FILE = "tuning_config.json"
WEIGHTS_FILE = "tuning_weights.safetensors"
PEFT_CONFIG_FILE = "adapter_config.json"
PEFT_WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."


def _base_name(model: nn.Module) -> str:
    name = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    return str(name) or f"<unnamed {type(model).__name__}>"


def to_peft_key(name: str) -> str:
    """encoder.layer.0.attention.self.query.lora_A.default.weight -> base_model.model.encoder...query.lora_A.weight"""
    parts = name.split(".")
    out = [p for i, p in enumerate(parts) if not (p == PEFT_ADAPTER and i > 0 and parts[i - 1].startswith("lora_"))]
    return PEFT_PREFIX + ".".join(out)


def from_peft_key(key: str) -> str:
    """Inverse of `to_peft_key`."""
    if not key.startswith(PEFT_PREFIX):
        raise MismatchError(f"unexpected key '{key}' in {PEFT_WEIGHTS_FILE} (peft keys start with {PEFT_PREFIX})")
    out: list[str] = []
    for p in key[len(PEFT_PREFIX) :].split("."):
        out.append(p)
        if p.startswith("lora_"):
            out.append(PEFT_ADAPTER)
    return ".".join(out)


def _is_peft_carried(name: str, head_names: list[str]) -> bool:
    return ".lora_" in name or any(name == h or name.startswith(h + ".") for h in head_names)


def save_tuned(model: nn.Module, path: str | Path, base_name_or_path: str | None = None) -> Path:
    """Write the trainable weights and config of a tuned model to directory `path` (atomically); returns it."""
    from safetensors.torch import save_file

    state = tuning_state(model)
    if state is None:
        raise PeftIRError("save_tuned needs a model returned by apply_tuning or load_tuned")
    if state.base_hash is None:
        raise PeftIRError("cannot save: the model was tuned while its weights were not materialised (meta device)")
    config = state.config
    arch = detect_tuned(model, config)
    base_name = str(base_name_or_path) if base_name_or_path is not None else _base_name(model)
    trainable = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
    head_names = [n for n, _ in arch.head]
    peft_weights: dict[str, torch.Tensor] = {}
    if config.method == "lora":
        peft_weights = {to_peft_key(n): t for n, t in trainable.items() if _is_peft_carried(n, head_names)}
        trainable = {n: t for n, t in trainable.items() if not _is_peft_carried(n, head_names)}
    n_train, n_total = trainable_parameters(model)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "base": {"name_or_path": base_name, "class": state.base_class, "sha256_sampled": state.base_hash},
        "counts": {"trainable": n_train, "total": n_total, "share": n_train / n_total},
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.mkdir(parents=True)
        if trainable:
            save_file(trainable, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT})
        if config.method == "lora":
            from peft_ir.tuning.methods.lora import peft_lora_config

            peft_lora_config(arch, config, for_saving=True, base=base_name).save_pretrained(str(tmp))
            save_file(peft_weights, str(tmp / PEFT_WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return path


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """The parsed tuning_config.json of a checkpoint directory (validated)."""
    file = Path(path) / CONFIG_FILE
    if not file.is_file():
        raise PeftIRError(f"{path} is not a peft-ir tuning checkpoint (no {CONFIG_FILE})")
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(file, exc.lineno, None, f"invalid JSON: {exc.msg}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(file, None, "format", f"expected '{FORMAT}'")
    if meta.get("format_version") != FORMAT_VERSION:
        raise InputError(file, None, "format_version", f"unsupported version {meta.get('format_version')!r}")
    for key in ("config", "base"):
        if not isinstance(meta.get(key), dict):
            raise InputError(file, None, key, "missing or not an object")
    return meta


def _check_base(model: nn.Module, meta: dict[str, Any], path: Path) -> None:
    base = meta["base"]
    saved_name, saved_class, saved_hash = base.get("name_or_path"), base.get("class"), base.get("sha256_sampled")
    given_name, given_class = _base_name(model), type(model).__name__
    if saved_class != given_class:
        raise MismatchError(
            f"tuning checkpoint {path} was made for a {saved_class} ('{saved_name}'), "
            f"but the given base is a {given_class} ('{given_name}')"
        )
    given_hash = base_fingerprint(model)
    if given_hash != saved_hash:
        raise MismatchError(
            f"tuning checkpoint {path} was trained on base '{saved_name}' (weights sha256 {saved_hash}), "
            f"but the given base '{given_name}' has weights sha256 {given_hash}"
        )


def _read_weights(path: Path, config: TuningConfig) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    weights: dict[str, torch.Tensor] = {}
    if (path / WEIGHTS_FILE).is_file():
        weights.update(load_file(str(path / WEIGHTS_FILE)))
    if config.method == "lora":
        if not (path / PEFT_WEIGHTS_FILE).is_file():
            raise PeftIRError(f"LoRA checkpoint {path} lacks {PEFT_WEIGHTS_FILE}")
        weights.update({from_peft_key(k): v for k, v in load_file(str(path / PEFT_WEIGHTS_FILE)).items()})
    return weights


def load_tuned(base_model: nn.Module, path: str | Path, check_base: bool = True) -> nn.Module:
    """Apply a saved config to a fresh base model and load the saved weights; returns the tuned model.

    The base must be the one the checkpoint was trained on: same class and same weight fingerprint, otherwise
    MismatchError naming both (pass check_base=False to skip the fingerprint check deliberately).
    """
    path = Path(path)
    meta = read_checkpoint_meta(path)
    config = saved_config(meta)
    if tuning_state(base_model) is not None:
        raise PeftIRError("load_tuned needs a fresh base model, not an already tuned one")
    if check_base:
        _check_base(base_model, meta, path)
    weights = _read_weights(path, config)
    model = apply_tuning(base_model, config)
    _copy_trainable(model, weights, path)
    state = tuning_state(model)
    if state is not None and state.base_hash is None:
        state.base_hash = meta["base"].get("sha256_sampled")
    return model


def _copy_trainable(model: nn.Module, weights: dict[str, torch.Tensor], path: Path) -> None:
    """Copy saved tensors into the model's trainable parameters; every one must be present with its shape."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(set(params) - set(weights))
    unexpected = sorted(set(weights) - set(params))
    if missing or unexpected:
        raise MismatchError(
            f"tuning checkpoint {path} does not fit the model: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    with torch.no_grad():
        for name, p in params.items():
            tensor = weights[name]
            if tensor.shape != p.shape:
                raise MismatchError(
                    f"tuning checkpoint {path}: {name} has shape {tuple(tensor.shape)}, the model {tuple(p.shape)}"
                )
            p.copy_(tensor.to(device=p.device, dtype=p.dtype))


def saved_config(meta: dict[str, Any]) -> TuningConfig:
    """The TuningConfig of a checkpoint (`read_checkpoint_meta`). Checkpoints written before `train_pooler` existed
    trained a cross-encoder's pooler with its head."""
    config = meta["config"]
    return TuningConfig.from_dict(config if "train_pooler" in config else {**config, "train_pooler": True})


def load_trainable(model: nn.Module, path: str | Path) -> nn.Module:
    """Load saved trainable weights into a model already tuned with the same config (resuming training)."""
    path = Path(path)
    meta = read_checkpoint_meta(path)
    config = saved_config(meta)
    state = tuning_state(model)
    if state is None or state.config.to_dict() != config.to_dict():
        raise MismatchError(f"tuning checkpoint {path} was saved with {config.to_dict()}, "
                            f"the model is tuned with {state.config.to_dict() if state else 'nothing'}")
    saved = meta["base"].get("sha256_sampled")
    if saved and state.base_hash and saved != state.base_hash:  # the start's weights: full fine-tuning included
        raise MismatchError(f"tuning checkpoint {path} was trained from base '{meta['base'].get('name_or_path')}' "
                            f"(weights sha256 {saved}), this training starts from '{_base_name(model)}' (weights "
                            f"sha256 {state.base_hash}): resume with the same base model, or train into a new output")
    _copy_trainable(model, _read_weights(path, config), path)
    return model
