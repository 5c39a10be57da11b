"""The tiny random configs of every covered model_type (peft_ir.tuning.arch.ARCHITECTURES), shared by the tuning
tests (tests/tuning/conftest.py) and the tiny model folders of tests/conftest.py; and the tiny decoder and ModernBERT
folders (weights and tokenizer) that tests/conftest.py and bench/train_step.py build."""

from __future__ import annotations

from pathlib import Path
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


DECODER_TOKENIZERS = {  # tokenizer flavour of each tiny decoder folder: what its real family's tokenizer does
    "llama": "llama",   # BOS added, no EOS, no pad token, right padding (RepLLaMA / RankLLaMA)
    "qwen3": "qwen",    # nothing added, pad = EOS, left padding (Qwen3-Embedding)
    "qwen2": "qwen", "mistral": "llama",
}


def save_tiny_decoder(out: Path, family: str, vocabulary: str | Path, **sizes: Any) -> Path:
    """Save into `out` a random decoder of `family` (tiny_config, with `sizes` as its overrides; seed 0) and a
    tokenizer behaving like that family's: the vocabulary of the BERT tokenizer at `vocabulary` (MiniLM's) with a
    Llama-like template (BOS, no EOS, no pad token, right padding) or a Qwen-like one (no special tokens, pad = EOS,
    left padding). [CLS] plays BOS, [SEP] EOS."""
    import torch
    from tokenizers import Tokenizer, processors
    from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerFast

    mini = AutoTokenizer.from_pretrained(vocabulary)
    backend = Tokenizer.from_str(mini.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    bos, eos, unk, pad = mini.cls_token_id, mini.sep_token_id, mini.unk_token_id, mini.pad_token_id
    if DECODER_TOKENIZERS[family] == "llama":
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A", pair="[CLS] $A [CLS]:1 $B:1", special_tokens=[("[CLS]", bos)])
        tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="[CLS]", eos_token="[SEP]",
                                      unk_token="[UNK]", padding_side="right")
        ids = dict(bos_token_id=bos, eos_token_id=eos, pad_token_id=None)
    else:
        backend.post_processor = None
        tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="[SEP]", pad_token="[SEP]",
                                      padding_side="left")
        ids = dict(bos_token_id=None, eos_token_id=eos, pad_token_id=eos)
    assert unk is not None and pad is not None
    torch.manual_seed(0)
    config = tiny_config(family, vocab_size=len(tok), **ids, **sizes)
    AutoModel.from_config(config).save_pretrained(out)
    tok.save_pretrained(out)
    return Path(out)


def save_tiny_modernbert(out: Path, vocabulary: str | Path, **sizes: Any) -> Path:
    """Save into `out` a random ModernBERT (tiny_config, with `sizes` as its overrides; seed 0; local attention
    window 4) and a tokenizer behaving like ModernBERT's: the vocabulary and [CLS] q [SEP] p [SEP] template of the
    BERT tokenizer at `vocabulary` (MiniLM's) in a plain fast tokenizer that returns no token_type_ids (the model
    takes none)."""
    import torch
    from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerFast

    mini = AutoTokenizer.from_pretrained(vocabulary)
    tok = PreTrainedTokenizerFast(tokenizer_object=mini.backend_tokenizer, cls_token="[CLS]", sep_token="[SEP]",
                                  pad_token="[PAD]", unk_token="[UNK]", mask_token="[MASK]",
                                  model_input_names=["input_ids", "attention_mask"])
    tok.backend_tokenizer.no_truncation()
    tok.backend_tokenizer.no_padding()
    ids = dict(pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
               cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id)
    torch.manual_seed(0)
    AutoModel.from_config(tiny_config("modernbert", vocab_size=len(tok), **ids, **sizes)).save_pretrained(out)
    tok.save_pretrained(out)
    return Path(out)
