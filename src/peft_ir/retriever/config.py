"""What a bi-encoder is (EncoderSpec) and how one is trained (RetrieverTrainConfig): settings defined once.

Kept free of torch so that `peft-ir` can build its flags from these fields without loading any model library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from peft_ir.errors import PeftIRError
from peft_ir.models import Attention
from peft_ir.precision import ComputeDtype
from peft_ir.settings import setting
from peft_ir.training.args import ScheduleConfig, check_attention
from peft_ir.training.losses import BI_ENCODER, LOSSES, check_loss, loss_help, loss_names

Pooling = Literal["mean", "cls", "lasttoken"]
# The EncoderSpec a `peft-ir train retriever` output holds beside its adapter folder (training/skeleton.py writes it;
# the teacher and export read it).
ENCODER_SPEC_FILE = "encoder.json"


@dataclass
class EncoderSpec:
    """Everything that decides what vector a text gets; its fingerprint must match between index and queries."""

    model: str | None = setting(None, help="model path or hub name (default: the embedded all-MiniLM-L6-v2)")
    pooling: Pooling | None = setting(None, help="lasttoken: the last real token (decoders); default: as the "
                                                 "sentence-transformers folder says (mean for MiniLM), else lasttoken "
                                                 "for a decoder (Llama, Qwen, Mistral) and mean for an encoder")
    normalize: bool | None = setting(None, help="L2-normalise embeddings (default: as the model folder says, True "
                                                "for MiniLM)")
    append_eos: bool | None = setting(None, help="end every text with the tokenizer's EOS token, after truncation "
                                                 "(RepLLaMA); default: with lasttoken pooling, unless the tokenizer "
                                                 "already does")
    query_prefix: str = setting("", help='text put before every query (RepLLaMA: "query: ")')
    passage_prefix: str = setting("", help='text put before every passage (RepLLaMA: "passage: ")')
    query_max_length: int | None = setting(None, help="query tokens kept (default: the model's own max_seq_length, "
                                                      "256 for MiniLM)")
    passage_max_length: int = setting(256, help="passage tokens kept")
    attn_implementation: Attention | None = setting(None, help="transformers' attention: eager, sdpa, "
                                                               "flash_attention_2/3 (needs flash-attn and a GPU); "
                                                               "default: the model's own (sdpa where it has it)")
    adapter: str | None = setting(None, help="tuned weights (a training run's adapter/ folder)")
    extra: dict[str, Any] = setting(default_factory=dict, help="further settings recorded in the manifest")


@dataclass(frozen=True, kw_only=True)
class EncodeConfig:
    """How a corpus is encoded (the encoder itself is an EncoderSpec)."""

    batch_size: int = setting(64, help="passages encoded per batch")
    chunk_size: int = setting(4096, help="passages per resumable chunk")
    dtype: ComputeDtype = setting("float32", help="compute precision (peft_ir.precision): on a GPU the model is cast "
                                                  "to it; on the CPU bfloat16 runs under autocast (about 2x faster "
                                                  "where the CPU has AVX512-BF16 or AMX, slower elsewhere) and "
                                                  "float16 is refused; embeddings are stored as float32")


@dataclass(kw_only=True)
class RetrieverTrainConfig(ScheduleConfig):
    """Bi-encoder training: InfoNCE over in-batch and hard negatives, or distillation of a teacher's scores
    (see retriever/train.py and training/losses.py)."""

    num_negatives: int = setting(1, help="hard negatives per query in each batch (0: in-batch negatives only)")
    encoder: EncoderSpec = setting(default_factory=EncoderSpec, expand=True, help="the bi-encoder to tune")
    loss: str = setting("infonce", choices=lambda: loss_names(BI_ENCODER), help=loss_help(BI_ENCODER))
    cache_mini_batch: int | None = setting(None, help="GradCache mini-batch size: large batches in small memory "
                                                      "(infonce only; default: the plain in-batch loss)")
    temperature: float = setting(0.05, help="the model's score is its similarity / temperature, in every loss "
                                            "(InfoNCE's temperature)")
    dev_corpus: int = setting(2000, help="passages in the dev corpus")
    dev_top_k: int = setting(20, help="first-stage hits of each dev query (from --negatives-run) put in the dev "
                                      "corpus, before the sampled passages")

    def check(self) -> None:
        """Refuse a loss that does not fit a bi-encoder, its settings or the training data, or an attention
        implementation that is not installed, before anything loads."""
        check_attention(self.encoder.attn_implementation, self.tuning)
        super().check()
        check_loss(self.loss, BI_ENCODER, self.train, self.distill_temperature)
        problem = loss_problem(self.loss, self.cache_mini_batch, self.num_negatives)
        if problem:
            raise PeftIRError(problem)
        if not self.temperature > 0:
            raise PeftIRError(f"--temperature must be positive, got {self.temperature}")


def loss_problem(loss: str, cache_mini_batch: int | None, num_negatives: int) -> str | None:
    """What is wrong with these bi-encoder settings together (the `peft-ir run` check asks too); None if nothing."""
    cls = LOSSES.get(loss)
    if cls is None:
        return None  # an unknown name is refused with the choices elsewhere
    if cache_mini_batch and cls.name != "infonce":
        return f"cache_mini_batch (GradCache) applies to the infonce loss only, not {loss}"
    if cls.needs_teacher and num_negatives < 1:
        return (f"loss {loss} compares each positive with its negatives: num_negatives must be at least 1, "
                f"got {num_negatives}")
    return None
