"""A training output folder read back for export: which model it is, its spec, summary, tuning and evaluation.

`peft-ir train retriever|reranker` (and each training stage of `peft-ir run`) writes `<out>/adapter/` (the tuned
weights, tuning/checkpoint.py), a spec file (encoder.json for a bi-encoder, cross_encoder.json for a re-ranker),
summary.json and metrics.jsonl. Inside a `peft-ir run` folder (`runs/<name>/retriever` or `.../reranker`) the parent
also holds config.resolved.yaml and, once evaluated, metrics.json (experiment/rundir.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from peft_ir.data.textfile import read_dataclass, read_json_object
from peft_ir.errors import InputError, PeftIRError
from peft_ir.experiment.rundir import RunDir
from peft_ir.reranker.config import CROSS_ENCODER_SPEC_FILE, CrossEncoderSpec
from peft_ir.retriever.config import ENCODER_SPEC_FILE, EncoderSpec
from peft_ir.training.checkpoints import SUMMARY_FILE
from peft_ir.tuning.checkpoint import ADAPTER_DIR, CONFIG_FILE, WEIGHTS_FILE, read_checkpoint_meta, saved_config
from peft_ir.tuning.config import TuningConfig, get_method
from peft_ir.tuning.structure import model_structure

Kind = Literal["retriever", "reranker"]
# The spec file each training writes (RetrieverTask.spec_file, RerankerTask.spec_file).
SPEC_FILES: dict[str, Kind] = {ENCODER_SPEC_FILE: "retriever", CROSS_ENCODER_SPEC_FILE: "reranker"}
# The run kinds a trained model's own outputs are evaluated as in a `peft-ir run` folder (experiment/evaluation.py).
OWN_RUNS: dict[Kind, tuple[str, ...]] = {"retriever": ("dense",), "reranker": ("reranked", "reranked-fused")}


@dataclass
class TrainedModel:
    """One training output folder, validated."""

    root: Path
    kind: Kind
    spec: EncoderSpec | CrossEncoderSpec
    summary: dict[str, Any]
    meta: dict[str, Any]                 # adapter/tuning_config.json
    tuning: TuningConfig
    run_dir: RunDir | None = None        # the `peft-ir run` folder around it, if any
    metrics: dict[str, Any] | None = None  # its metrics.json, once evaluated

    @property
    def adapter(self) -> Path:
        return self.root / ADAPTER_DIR

    @property
    def method(self) -> str:
        return self.tuning.method

    def merge_blocker(self) -> str | None:
        """Why the trained weights cannot be folded into the base, or None when they can (full, lora, bitfit unless
        it added biases the base's config cannot build). Reads the base's config, not its weights."""
        method = get_method(self.method)
        if method.merge_blocker is None and self.tuning.aside is not None:
            return "its aside modules are a non-linear side path with no equivalent change of the base weights"
        return method.merge_blocker_on(lambda: model_structure(self.spec.model, self.kind == "reranker"))

    def peft_only(self) -> bool:
        """Whether peft's own files hold every trained weight (LoRA without aside modules)."""
        return self.method == "lora" and not (self.adapter / WEIGHTS_FILE).is_file()

    @property
    def base_name(self) -> str:
        return str(self.meta["base"].get("name_or_path") or "")

    @property
    def base_fingerprint(self) -> str:
        return str(self.meta["base"].get("sha256_sampled") or "")


def read_trained(path: str | Path) -> TrainedModel:
    """Validate and read a training output folder; PeftIRError says what is missing."""
    root = Path(path)
    if not root.is_dir():
        raise PeftIRError(f"{root} is not a folder; give a training output folder (`peft-ir train ... --output`, "
                          "or runs/<name>/retriever|reranker of `peft-ir run`)")
    specs = [name for name in SPEC_FILES if (root / name).is_file()]
    missing = [f"{ADAPTER_DIR}/{CONFIG_FILE}"] * (not (root / ADAPTER_DIR / CONFIG_FILE).is_file())
    missing += [SUMMARY_FILE] * (not (root / SUMMARY_FILE).is_file()) + [" or ".join(SPEC_FILES)] * (not specs)
    if missing:
        inside = [str(root / part) for part in ("retriever", "reranker") if (root / part / SUMMARY_FILE).is_file()]
        hint = f"; a run folder's models are in {' and '.join(inside)}" if inside else ""
        raise PeftIRError(f"{root} is not a peft-ir training output: it lacks {', '.join(missing)} "
                          f"(a finished `peft-ir train retriever|reranker` writes them){hint}")
    if len(specs) > 1:
        raise PeftIRError(f"{root} holds both {' and '.join(specs)}: one training output is one model")
    kind = SPEC_FILES[specs[0]]
    spec = read_dataclass(root / specs[0], EncoderSpec if kind == "retriever" else CrossEncoderSpec, ignore=("adapter",))
    if isinstance(spec, CrossEncoderSpec) and not spec.classifies:
        raise PeftIRError(f"{root} is a re-ranker scored by its {spec.head} head (the cosine of its query and passage "
                          "token states), which no Hugging Face model class computes: export writes sequence-"
                          "classification models only; load it with peft-ir (`peft-ir rerank --adapter "
                          f"{root / ADAPTER_DIR} --head {spec.head}"
                          f"{' --cross-attention gated' if spec.gated else ''}`)")
    summary = read_json_object(root / SUMMARY_FILE)
    meta = read_checkpoint_meta(root / ADAPTER_DIR)
    try:
        tuning = saved_config(meta)
    except PeftIRError as exc:
        raise InputError(root / ADAPTER_DIR / CONFIG_FILE, None, "config", str(exc)) from None
    model = TrainedModel(root, kind, spec, summary, meta, tuning)
    parent = RunDir(root.parent)
    if root.name in ("retriever", "reranker") and parent.config.is_file():
        model.run_dir = parent
        model.metrics = RunDir.read_json(parent.metrics)
    return model
