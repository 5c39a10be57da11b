"""The tiny random configs of every covered model_type (peft_ir.tuning.arch.ARCHITECTURES), shared by the tuning
tests (tests/tuning/conftest.py) and the tiny model folders of tests/conftest.py."""

from __future__ import annotations

from typing import Any

# One row per covered model_type (peft_ir.tuning.arch.ARCHITECTURES): a transformers config class and its tiny sizes
# (hidden 32, 2 layers, vocab 99). The decoders use grouped-query attention (fewer key/value heads), Qwen3 a head_dim
# that is not hidden / heads, Mistral and ModernBERT a sliding window shorter than the test batch.
_SIZES = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
_DECODER = dict(_SIZES, max_position_embeddings=64, pad_token_id=0, num_key_value_heads=2)
TINY_CONFIGS: dict[str, tuple[str, dict]] = {
    "bert": ("BertConfig", dict(_SIZES, max_position_embeddings=64)),
    "roberta": ("RobertaConfig", dict(_SIZES, max_position_embeddings=70, pad_token_id=1)),
    "xlm-roberta": ("XLMRobertaConfig", dict(_SIZES, max_position_embeddings=70, pad_token_id=1)),
    "electra": ("ElectraConfig", dict(_SIZES, embedding_size=16, max_position_embeddings=64)),
    "distilbert": ("DistilBertConfig", dict(vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37,
                                            max_position_embeddings=64)),
    "mpnet": ("MPNetConfig", dict(_SIZES, max_position_embeddings=70, pad_token_id=1,
                                  attn_implementation="eager")),  # MPNet computes its attention itself
    "modernbert": ("ModernBertConfig", dict(_SIZES, max_position_embeddings=64, pad_token_id=0, bos_token_id=1,
                                            eos_token_id=2, cls_token_id=1, sep_token_id=2, local_attention=4,
                                            global_attn_every_n_layers=2)),
    "llama": ("LlamaConfig", _DECODER),
    "qwen2": ("Qwen2Config", _DECODER),
    "qwen3": ("Qwen3Config", dict(_DECODER, head_dim=16)),
    "mistral": ("MistralConfig", dict(_DECODER, num_key_value_heads=1, sliding_window=4)),
}


def tiny_config(family: str = "bert", attn: str = "sdpa", hidden: int | None = None, intermediate: int | None = None,
                **overrides: Any):  # type: ignore[no-untyped-def]
    """The tiny random config of one family (a row of TINY_CONFIGS), optionally wider (for budgets a hidden size of
    32 cannot reach) or with other `overrides` (a real tokenizer's vocab_size and special token ids, say)."""
    import transformers as tf

    name, kwargs = TINY_CONFIGS[family]
    kwargs = dict(kwargs)
    for keys, value in ((("hidden_size", "dim"), hidden), (("intermediate_size", "hidden_dim"), intermediate)):
        for key in keys:
            if value is not None and key in kwargs:
                kwargs[key] = value
    return getattr(tf, name)(**{"num_labels": 1, "attn_implementation": attn, **kwargs, **overrides})
