"""What a cross-encoder is (CrossEncoderSpec) and how one is trained (RerankerTrainConfig): settings defined once.

Kept free of torch so that `peft-ir` can build its flags from these fields without loading any model library.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from peft_ir.data.textfile import read_dataclass
from peft_ir.errors import PeftIRError
from peft_ir.models import Attention
from peft_ir.settings import setting
from peft_ir.training.args import PEFT_LR, ScheduleConfig, check_attention
from peft_ir.training.checkpoints import training_output_of
from peft_ir.training.losses import CROSS_ENCODER, check_loss, loss_help, loss_names

# The CrossEncoderSpec a `peft-ir train reranker` output holds beside its adapter folder (training/skeleton.py writes
# it; the teacher and export read it).
CROSS_ENCODER_SPEC_FILE = "cross_encoder.json"

# How a pair's score is read from its joint encoding. classifier: transformers' one-logit sequence-classification head
# (new, trained whole). cosine: COSINE_SCALE x the cosine of the mean query-token and mean passage-token states, no new
# weights, so that a cross-encoder built on a bi-encoder checkpoint starts from what the bi-encoder learnt.
Head = Literal["classifier", "cosine"]
COSINE_SCALE = 20.0  # sentence-transformers' MultipleNegativesRankingLoss scale: cosines become logits near +-20
# How query and passage read each other. full: the tokenizer's pair template, one attention over the pair. gated: each
# text in its own template, attention within each text plus the pair's joint attention mixed in by per-head gates that
# start at 0, so that the model starts as exactly the bi-encoder it is built on (reranker/gated.py).
CrossAttention = Literal["full", "gated"]


@dataclass
class CrossEncoderSpec:
    """Everything that decides a pair's score (with the trained weights): its fingerprint names the score cache."""

    model: str | None = setting(None, help="base encoder or decoder: HF or sentence-transformers folder, or a cached "
                                           "hub name (default: the embedded all-MiniLM-L6-v2)")
    query_max_length: int = setting(32, help="query tokens kept (special tokens not counted)")
    passage_max_length: int = setting(192, help="passage tokens kept")
    seed: int = setting(42, flat_name="head_seed", help="seed of the new classification head")
    query_prefix: str = setting("", help='text put before every query of a pair (RankLLaMA: "query: "); counts '
                                         "towards query_max_length")
    passage_prefix: str = setting("", help='text put before every passage of a pair (RankLLaMA: "document: "); '
                                           "counts towards passage_max_length")
    attn_implementation: Attention | None = setting(None, help="transformers' attention: eager, sdpa, "
                                                               "flash_attention_2/3 (needs flash-attn and a GPU); "
                                                               "default: the model's own (sdpa where it has it)")
    head: Head = setting("classifier", help="how the score is read from the pair's encoding: classifier (a new "
                                            "one-logit head, as transformers' sequence classification) or cosine "
                                            f"({COSINE_SCALE:g} x cosine of the mean query-token and mean "
                                            "passage-token states: no new weights, starts from what a bi-encoder "
                                            "checkpoint knows)")
    cross_attention: CrossAttention = setting("full", help="full (the tokenizer's pair template, joint attention) or "
                                                           "gated (each text in its own template, joint attention "
                                                           "mixed in by per-head gates starting at 0: with the cosine "
                                                           "head the model starts as exactly the bi-encoder)")

    def check(self, method: str | None = None) -> None:
        """Refuse a layout the head, the attention setting or the tuning `method` cannot take, before any model
        loads."""
        if self.cross_attention == "gated":
            from peft_ir.tuning.config import get_method  # noqa: PLC0415

            if method is not None and "prefix_len" in get_method(method).size_fields:
                raise PeftIRError(f"cross_attention: gated runs its own attention, which {method}'s prefixes cannot "
                                  "enter; choose another method")
            if self.head != "cosine":
                raise PeftIRError("cross_attention: gated needs head: cosine (the gates start the model as the "
                                  f"bi-encoder, whose score is the cosine of the two texts), not {self.head}")
            if self.attn_implementation is not None:
                raise PeftIRError("cross_attention: gated runs its own attention (scaled dot product over each "
                                  f"text and over the pair); drop attn_implementation={self.attn_implementation}")

    @property
    def gated(self) -> bool:
        """Whether each text reads the other only through gates that start closed (reranker/gated.py)."""
        return self.cross_attention == "gated"

    @property
    def classifies(self) -> bool:
        """Whether the model carries a task head (AutoModelForSequenceClassification) rather than being a bare
        encoder scored by the cosine of its segments."""
        return self.head == "classifier"


def recorded_spec(adapter: str | Path) -> tuple[Path, CrossEncoderSpec] | None:
    """The spec a `peft-ir train reranker` output recorded beside its adapter folder, or in the output that holds a
    checkpoint's adapter folder (and where), if it has one."""
    path = training_output_of(adapter) / CROSS_ENCODER_SPEC_FILE
    return (path, read_dataclass(path, CrossEncoderSpec, ignore=("adapter",))) if path.is_file() else None


@dataclass(kw_only=True)
class RerankerTrainConfig(ScheduleConfig):
    """Cross-encoder training on groups of one positive and mined negatives, under a loss of training/losses.py
    (see reranker/training.py)."""

    negatives_pool: int = setting(32, help="negatives kept per query to sample groups (and dev candidates) from")
    cross_encoder: CrossEncoderSpec = setting(default_factory=CrossEncoderSpec, expand=True,
                                              help="the cross-encoder to tune")
    loss: str = setting("lce", choices=lambda: loss_names(CROSS_ENCODER), help=loss_help(CROSS_ENCODER))
    group_size: int = setting(8, help="1 positive + (group size - 1) negatives per query")
    batch_size: int = setting(8, help="queries per device per step")
    dev_candidates: int = setting(30, help="candidates re-ranked per dev query")
    eval_batch_size: int = setting(64, help="pairs scored per batch in dev evaluation")
    head_lr: float | None = setting(None, help=f"learning rate of the new head (and a pooler that trains with it; "
                                               f"or of gated cross attention's gates); default: the run's rate for "
                                               f"PEFT methods, {PEFT_LR:g} for full")

    def check(self) -> None:
        """Refuse a loss that does not fit a cross-encoder or the training data, or an attention implementation
        that is not installed, before anything loads."""
        check_attention(self.cross_encoder.attn_implementation, self.tuning)
        self.cross_encoder.check(self.tuning.method)
        if self.head_lr is not None and not self.cross_encoder.classifies and not self.cross_encoder.gated:
            raise PeftIRError(f"head_lr sets the rate of a classifier head (or of gated cross attention's gates); "
                              f"the {self.cross_encoder.head} head has no weights of its own (drop head_lr)")
        super().check()
        check_loss(self.loss, CROSS_ENCODER, self.train, self.distill_temperature)

    def head_learning_rate(self) -> float:
        if self.head_lr is not None:
            return self.head_lr
        return PEFT_LR if self.tuning.method == "full" else self.learning_rate()
