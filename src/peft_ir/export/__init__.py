"""Exports of trained peft-ir models into folders other libraries load (`peft-ir export`).

    export_model(train_dir, ExportConfig(format, output, merge), command) -> what was written   (build.py)
    load_model(path) -> SentenceTransformer | CrossEncoder      an export, peft-ir modules included (module.py)
    PeftIRTransformer                                            the sentence-transformers module of an export
                                                                 whose method has no merged form (module.py)

Modules: config (ExportConfig, FORMATS: torch-free), source (a training output folder read back), formats (one
writer per format), card (the model card), build (checks, temporary folder, rename), module.

Heavy modules load on first use, so `peft-ir --help` (which reads config.py) stays fast.
"""

from __future__ import annotations

from typing import Any

_LAZY = {"export_model": "peft_ir.export.build", "load_model": "peft_ir.export.module",
         "PeftIRTransformer": "peft_ir.export.module"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib  # noqa: PLC0415

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
