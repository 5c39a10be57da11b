"""What a bi-encoder is (EncoderSpec) and how one is trained (RetrieverTrainConfig): settings defined once.

Kept free of torch so that `peft-ir` can build its flags from these fields without loading any model library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from peft_ir.models import Attention
from peft_ir.settings import setting
from peft_ir.training.args import ScheduleConfig, check_attention

Pooling = Literal["mean", "cls", "lasttoken"]


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


@dataclass(kw_only=True)
class RetrieverTrainConfig(ScheduleConfig):
    """Contrastive bi-encoder training: InfoNCE over in-batch and hard negatives (see retriever/train.py)."""

    num_negatives: int = setting(1, help="hard negatives per query in each batch (0: in-batch negatives only)")
    encoder: EncoderSpec = setting(default_factory=EncoderSpec, expand=True, help="the bi-encoder to tune")
    cache_mini_batch: int | None = setting(None, help="GradCache mini-batch size: large batches in small memory "
                                                      "(default: the plain in-batch loss)")
    temperature: float = setting(0.05, help="InfoNCE temperature (the scores' scale is its inverse)")
    dev_corpus: int = setting(2000, help="passages in the dev corpus")

    def check(self) -> None:
        check_attention(self.encoder.attn_implementation, self.tuning)
        super().check()
