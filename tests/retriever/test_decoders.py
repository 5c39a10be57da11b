"""Bi-encoders on decoders (RepLLaMA style): last-token pooling of the EOS appended after truncation, on either
padding side, prefixes, training and encoding; encoders keep mean pooling and their fingerprints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from peft_ir.errors import PeftIRError
from peft_ir.fingerprint import manifest_fingerprint
from peft_ir.retriever.config import EncoderSpec
from peft_ir.retriever.encoder import BiEncoder
from peft_ir.retriever.train import train_retriever
from tiny_train import retriever_config

TEXTS = ["alpha", "alpha beta gamma delta epsilon zeta theta iota kappa lambda sigma omega river stone cloud tree",
         "river stone cloud"]


def _spec(model: Path, **kw) -> EncoderSpec:  # type: ignore[no-untyped-def]
    return EncoderSpec(model=str(model), query_prefix="query: ", passage_prefix="passage: ", query_max_length=8,
                       passage_max_length=12, **kw)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_last_token_pooling_takes_the_eos_after_each_text(family: str, side: str, tiny_decoder_dir) -> None:
    """Checked by hand: each text alone, prefix + words cut to the limit, then EOS; its vector is the model's
    hidden state at that EOS, whatever side the batch is padded on."""
    enc = BiEncoder(_spec(tiny_decoder_dir(family)), device="cpu")
    assert enc.spec.pooling == "lasttoken" and enc.spec.append_eos is True  # the decoder defaults
    tok = enc.model.tokenizer
    tok.padding_side = side
    eos = tok.eos_token_id
    for kind, prefix, limit, encode in (("query", "query: ", 8, enc.encode_queries),
                                        ("passage", "passage: ", 12, enc.encode_passages)):
        vectors = encode(TEXTS, batch_size=3)
        words = tok.backend_tokenizer.encode(prefix + TEXTS[1], add_special_tokens=False).ids
        bos = [tok.bos_token_id] if family == "llama" else []  # the Llama-like template adds BOS, Qwen's nothing
        for text, vector in zip(TEXTS, vectors):
            ids = tok(prefix + text, truncation=True, max_length=limit)["input_ids"]
            assert ids[-1] == eos and ids.count(eos) == 1 and len(ids) <= limit
            with torch.no_grad():
                hidden = enc.hf_model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1].numpy()
            np.testing.assert_allclose(vector, hidden, atol=1e-5, err_msg=f"{kind} {text!r} padded {side}")
        long_ids = tok(prefix + TEXTS[1], truncation=True, max_length=limit)["input_ids"]
        assert long_ids == bos + words[:limit - len(bos) - 1] + [eos]  # cut first, EOS kept after the cut
    assert enc.count_truncated(TEXTS, "query") == 1  # only the long text is longer than 8 tokens with its EOS


def test_decoder_settings_are_recorded_and_change_the_fingerprint(tiny_decoder_dir) -> None:
    model = tiny_decoder_dir("qwen3")
    enc = BiEncoder(_spec(model), device="cpu")
    plain = BiEncoder(_spec(model, append_eos=False), device="cpu")
    assert enc.manifest()["append_eos"] is True and plain.manifest()["append_eos"] is False
    assert manifest_fingerprint(enc.manifest()) != manifest_fingerprint(plain.manifest())
    assert not np.allclose(enc.encode_queries(TEXTS[:1]), plain.encode_queries(TEXTS[:1]))
    mean = BiEncoder(_spec(model, pooling="mean"), device="cpu")
    assert mean.spec.append_eos is False  # EOS only for last-token pooling, unless asked


def test_an_eos_the_tokenizer_already_appends_is_not_doubled(tiny_decoder_dir, tmp_path: Path) -> None:
    """A tokenizer that ends texts with EOS itself (Qwen3-Embedding's) gets none appended; asking is refused."""
    import shutil

    from transformers import AutoTokenizer

    from peft_ir.decoders import append_eos

    folder = tmp_path / "ends-with-eos"
    shutil.copytree(tiny_decoder_dir("qwen3"), folder)
    tok = AutoTokenizer.from_pretrained(folder)
    append_eos(tok)
    tok.save_pretrained(folder)
    enc = BiEncoder(_spec(folder), device="cpu")
    assert enc.spec.append_eos is False
    assert enc.model.tokenizer("query: alpha")["input_ids"][-2:] != [tok.eos_token_id] * 2
    with pytest.raises(PeftIRError, match="already ends every text with its EOS"):
        BiEncoder(_spec(folder, append_eos=True), device="cpu")


def test_encoders_keep_mean_pooling_and_their_fingerprint(minilm_path: str, tiny_bert_dir: Path) -> None:
    """MiniLM: the sentence-transformers folder's own pipeline, the manifest fingerprint of before decoders."""
    from sentence_transformers import SentenceTransformer

    enc = BiEncoder(EncoderSpec(), device="cpu")
    assert enc.spec.pooling == "mean" and enc.spec.append_eos is False and enc.spec.normalize is True
    assert manifest_fingerprint(enc.manifest()) == "6d1c994a04455bdc"  # as before decoders: old indexes still match
    reference = SentenceTransformer(minilm_path, device="cpu").encode(TEXTS, convert_to_numpy=True)
    np.testing.assert_allclose(enc.encode_passages(TEXTS), reference, atol=1e-6)
    bert = BiEncoder(EncoderSpec(model=str(tiny_bert_dir)), device="cpu")
    assert bert.spec.pooling == "mean" and bert.spec.append_eos is False


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_a_decoder_retriever_trains_two_steps_and_encodes(family: str, tiny_decoder_dir, synthetic_beir: Path,
                                                         tmp_path: Path) -> None:
    model = tiny_decoder_dir(family)
    spec = _spec(model, normalize=True)
    out = tmp_path / "run"
    summary = train_retriever(retriever_config(synthetic_beir, model, out, encoder=spec, max_steps=2, dev_queries=0,
                                               logging_steps=1))
    assert summary["steps"] == 2 and summary["similarity"] == "cos_sim"
    saved = json.loads((out / "encoder.json").read_text())
    assert saved["pooling"] == "lasttoken" and saved["append_eos"] is True and saved["query_prefix"] == "query: "
    tuned = BiEncoder(EncoderSpec(**{k: v for k, v in saved.items() if k in EncoderSpec.__dataclass_fields__}),
                      device="cpu")
    base = BiEncoder(_spec(model, normalize=True), device="cpu")
    vectors = tuned.encode_passages(TEXTS)
    assert vectors.shape == (3, 32) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(vectors, base.encode_passages(TEXTS), atol=1e-4)  # the two steps changed the encoder
