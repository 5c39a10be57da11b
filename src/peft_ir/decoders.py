"""What a decoder backbone (Llama, Qwen, Mistral) needs to embed or score a text: its EOS token after the text and a
padding token, set up on its Hugging Face tokenizer.

A decoder's attention is causal, so only its last token has read the whole text: RepLLaMA-style retrievers pool
that token and RankLLaMA-style re-rankers score it. Both append the tokenizer's EOS token after truncation, so the
pooled token is the same for every text and survives the length limit. Here the EOS goes into the tokenizer's own
post-processor (its template of special tokens), which its truncation already counts: sentence-transformers,
training and the re-ranker's pair building then all cut and end texts alike.
"""

from __future__ import annotations

import json
from typing import Any

from peft_ir.errors import PeftIRError


def ends_with_eos(tokenizer: Any) -> bool:
    """Whether the tokenizer already ends every text with its EOS token (Qwen3-Embedding's tokenizer does)."""
    eos = tokenizer.eos_token_id
    ids = tokenizer("a")["input_ids"]
    return eos is not None and bool(ids) and ids[-1] == eos


def _eos_piece(eos: str, type_id: int) -> dict[str, Any]:
    return {"SpecialToken": {"id": eos, "type_id": type_id}}


def _template(single: list[dict[str, Any]], pair: list[dict[str, Any]], special: dict[str, Any]) -> dict[str, Any]:
    return {"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": special}


def _with_eos(processor: dict[str, Any] | None, eos: str, eos_id: int) -> dict[str, Any]:
    """The post-processor (as tokenizers' JSON) that does what `processor` does, then adds `eos` at the end of the
    text (of the pair, with the second text's type id)."""
    special = {eos: {"id": eos, "ids": [eos_id], "tokens": [eos]}}
    kind = processor.get("type") if processor else None
    if kind is None:
        return _template([{"Sequence": {"id": "A", "type_id": 0}}, _eos_piece(eos, 0)],
                         [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                          _eos_piece(eos, 1)], special)
    assert processor is not None
    if kind == "TemplateProcessing":
        out = dict(processor)
        for key in ("single", "pair"):
            last = out[key][-1]
            type_id = next(iter(last.values()))["type_id"]
            out[key] = [*out[key], _eos_piece(eos, type_id)]
        out["special_tokens"] = {**processor.get("special_tokens", {}), **special}
        return out
    if kind == "Sequence":
        inner = list(processor["processors"])
        templates = [i for i, p in enumerate(inner) if p.get("type") == "TemplateProcessing"]
        if templates:
            inner[templates[-1]] = _with_eos(inner[templates[-1]], eos, eos_id)
        else:
            inner.append(_with_eos(None, eos, eos_id))
        return {**processor, "processors": inner}
    if kind == "ByteLevel":  # trims offsets only: keep it, then add the EOS
        return {"type": "Sequence", "processors": [processor, _with_eos(None, eos, eos_id)]}
    raise PeftIRError(f"cannot append EOS after a {kind} post-processor (an encoder's: it ends texts with its own "
                      "separator); set append_eos false")


def append_eos(tokenizer: Any) -> None:
    """Make `tokenizer` (a Hugging Face fast tokenizer) end every text, and every text pair, with its EOS token,
    after truncation (which then keeps one token fewer of the text)."""
    eos, eos_id = tokenizer.eos_token, tokenizer.eos_token_id
    if eos is None or eos_id is None:
        raise PeftIRError(f"the tokenizer of {tokenizer.name_or_path} has no EOS token to append")
    backend = tokenizer.backend_tokenizer
    from tokenizers import Tokenizer  # noqa: PLC0415

    whole = json.loads(backend.to_str())
    whole["post_processor"] = _with_eos(whole.get("post_processor"), eos, eos_id)
    backend.post_processor = Tokenizer.from_str(json.dumps(whole)).post_processor
    if not ends_with_eos(tokenizer):  # the template above is wrong for this tokenizer: say so rather than embed
        raise PeftIRError(f"appending EOS to the tokenizer of {tokenizer.name_or_path} failed")


def ensure_pad_token(tokenizer: Any, distinct_from_eos: bool = False) -> int:
    """Give `tokenizer` a padding token where it has none (Llama's has none), and return its id.

    `distinct_from_eos`: a sequence-classification head finds each text's last token as the last one that is not
    padding (transformers' rule, for left and right padding alike), so a pad equal to the appended EOS would hide
    it; the pad then becomes the unknown or BOS token (RankLLaMA pads with Llama's <unk>). Padded positions are
    masked, so what token fills them changes nothing else.
    """
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id
    if pad is not None and not (distinct_from_eos and pad == eos):
        return int(pad)
    candidates = [tokenizer.unk_token_id, tokenizer.bos_token_id] + ([] if distinct_from_eos else [eos])
    candidates += [0, 1]
    pad = next(c for c in candidates if c is not None and (not distinct_from_eos or c != eos))
    tokenizer.pad_token = tokenizer.convert_ids_to_tokens(int(pad))
    return int(pad)
