"""`export_model`: check the request, write the format and its model card into a temporary folder, rename it.

Every refusal comes before any model is loaded: unknown format, a format for the other kind of model, --merge on
a method that has no merged form, `peft` for a method other than LoRA, an output folder holding files, a folder
that is not a training output.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from peft_ir.atomic import atomic_path
from peft_ir.errors import PeftIRError
from peft_ir.export.config import FORMATS, ExportConfig
from peft_ir.export.source import TrainedModel, read_trained

FOR_KIND = {"sentence-transformers": "retriever", "cross-encoder": "reranker"}


def check_output(output: str | Path) -> Path:
    out = Path(output)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise PeftIRError(f"--output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise PeftIRError(f"--output {out} exists and is not empty; give a new folder (an export never mixes "
                          "with other files)")
    return out


def plan(model: TrainedModel, fmt: str, merge: bool) -> bool:
    """Whether the export holds merged weights; PeftIRError for a combination that cannot be written."""
    kind = FOR_KIND.get(fmt)
    if kind is not None and kind != model.kind:
        other = "cross-encoder" if model.kind == "reranker" else "sentence-transformers"
        raise PeftIRError(f"{model.root} holds a {model.kind}; --format {fmt} is for a {kind} (use --format {other}, "
                          "hf or peft)")
    blocker = model.merge_blocker()
    own = "sentence-transformers" if model.kind == "retriever" else "cross-encoder"
    if fmt == "peft":
        if model.method != "lora":
            raise PeftIRError(f"--format peft holds a LoRA adapter; {model.root} was trained with {model.method} "
                              f"(use --format {own})")
        if not model.peft_only():
            raise PeftIRError(f"--format peft: {model.root} has LoRA with aside modules ({model.tuning.aside}), "
                              "which a peft adapter cannot hold")
        if merge:
            raise PeftIRError("--merge with --format peft: a peft folder holds the adapter, not merged weights "
                              "(use --format hf or sentence-transformers/cross-encoder with --merge)")
        return False
    if (merge or fmt == "hf") and blocker is not None:
        why = "--merge" if merge else "--format hf (plain transformers weights, i.e. merged)"
        raise PeftIRError(f"{why}: method {model.method} cannot be merged into the base model: {blocker}; "
                          f"export it without --merge as {own} (the base plus a peft-ir module)")
    return fmt == "hf" or merge or (blocker is None and model.method != "lora")


def check_uploadable(folder: Path) -> None:
    """What `huggingface_hub.upload_folder` would push as is: plain files only, no leftovers of the writing."""
    for path in folder.rglob("*"):
        if path.is_symlink():
            raise PeftIRError(f"export wrote a symbolic link {path} (upload_folder would not push its target)")
        if path.name.startswith(".") or ".tmp-" in path.name:
            raise PeftIRError(f"export left a temporary file {path}")


def export_model(train_dir: str | Path, cfg: ExportConfig, command: str | None = None) -> dict[str, Any]:
    """Write `train_dir`'s model as `cfg.format` into `cfg.output` with its README.md; returns what was written.

    `command` (the command line that asked for it) goes into the model card."""
    from peft_ir.export import card, formats  # noqa: PLC0415

    if cfg.format not in FORMATS:
        raise PeftIRError(f"unknown export format {cfg.format!r}; choose one of {', '.join(FORMATS)}")
    out = check_output(cfg.output)
    model = read_trained(train_dir)
    merged = plan(model, cfg.format, cfg.merge)
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        if cfg.format == "peft":
            formats.write_peft(model, tmp)
        elif cfg.format == "hf":
            formats.write_hf(model, tmp)
        elif cfg.format == "sentence-transformers":
            formats.write_sentence_transformers(model, tmp, merged)
        else:
            formats.write_cross_encoder(model, tmp, merged)
        (tmp / "README.md").write_text(card.model_card(model, cfg.format, merged, command), encoding="utf-8")
        check_uploadable(tmp)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    return {"output": str(out), "kind": model.kind, "method": model.method, "format": cfg.format, "merged": merged,
            "files": files, "bytes": sum(os.path.getsize(out / f) for f in files)}
