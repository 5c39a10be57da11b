"""BitFit (Ben Zaken et al. 2021): only the bias terms of the encoder train."""

from __future__ import annotations

from torch import nn

from peft_ir.errors import PeftIRError
from peft_ir.tuning.arch import Arch
from peft_ir.tuning.config import Method, Part, TuningConfig, register


def bias_parameters(arch: Arch) -> list[tuple[str, nn.Parameter]]:
    """Every bias of the encoder: q/k/v/output projections, FFN, LayerNorms, embeddings' LayerNorm (the pooler's
    belongs to a cross-encoder's head, which trains whole)."""
    biases = [(n, p) for n, p in arch.encoder_parameters() if n == "bias" or n.endswith(".bias")]
    if not biases:  # Llama, Mistral, Qwen3, ModernBERT (by default): nothing for BitFit to train
        raise PeftIRError(f"bitfit: this {arch.family} model has no bias terms in its encoder, so BitFit would train "
                          "nothing; choose another method")
    return biases


@register
class BitFit(Method):
    name = "bitfit"
    order = 10
    summary = "only the encoder's bias terms train"
    merge_blocker = None  # the trained biases are base parameters already; nothing to fold

    def parts(self, arch: Arch, config: TuningConfig) -> list[Part]:
        biases = bias_parameters(arch)
        total = sum(p.numel() for _, p in biases)
        return [Part(f"bias terms ({len(biases)} tensors)", "every *.bias of the encoder (in place)", total, 1)]

    def inject(self, arch: Arch, config: TuningConfig) -> None:
        for _, p in bias_parameters(arch):
            p.requires_grad_(True)
