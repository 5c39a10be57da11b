"""What `peft-ir export` writes (ExportConfig): settings defined once, free of torch so the CLI's flags load fast."""

from __future__ import annotations

from dataclasses import dataclass

from peft_ir.settings import setting

FORMATS = ("sentence-transformers", "cross-encoder", "hf", "peft")


@dataclass(kw_only=True)
class ExportConfig:
    """One export of a training output folder into a folder other libraries load."""

    format: str = setting(choices=lambda: FORMATS,
                          help="sentence-transformers (a retriever), cross-encoder (a re-ranker), hf (merged "
                               "weights for transformers' AutoModel / AutoModelForSequenceClassification) or peft "
                               "(a LoRA adapter folder for peft / SentenceTransformer.load_adapter)")
    output: str = setting(help="folder to write; it must not exist or be empty (written under a temporary name, "
                               "renamed when complete)")
    merge: bool = setting(False, help="fold the trained weights into the base weights (full, bitfit, lora; full "
                                      "and bitfit always are, but BitFit's added biases on Qwen2/Qwen3/Mistral "
                                      "cannot be); without it a LoRA model keeps its adapter as a peft-ir module")
