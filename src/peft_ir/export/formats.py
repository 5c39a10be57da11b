"""The four export formats, each written into an empty folder by the libraries that will read it back.

- sentence-transformers (a retriever): `SentenceTransformer.save` of the model peft-ir encodes with (its pooling,
  normalisation, query/passage limits and prefixes as prompts "query"/"document"); merged weights in a plain
  Transformer module, or the base plus its tuning in a PeftIRTransformer module (module.py).
- cross-encoder (a re-ranker): `CrossEncoder.save` of a one-logit sequence-classification model, activation
  Identity (predict returns peft-ir's raw scores), max_length = query + passage limits + special tokens; merged
  or PeftIRTransformer as above.
- hf: merged weights by `save_pretrained` (model and tokenizer): AutoModel (retriever) or
  AutoModelForSequenceClassification (re-ranker, head included).
- peft: the LoRA checkpoint's own peft files (adapter_config.json naming the base, adapter_model.safetensors with
  a re-ranker's head as modules_to_save).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from peft_ir.decoders import append_eos, ends_with_eos
from peft_ir.export.module import PeftIRTransformer
from peft_ir.export.source import TrainedModel
from peft_ir.models import hub_id
from peft_ir.tuning import merge_tuned
from peft_ir.tuning.arch import is_causal
from peft_ir.tuning.checkpoint import PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE

DEVICE = "cpu"  # an export is a file conversion: the same result on every machine, no GPU needed
SCRATCH = "_base"  # the cross-encoder's base, written inside the temporary folder and removed before the rename


def write_sentence_transformers(model: TrainedModel, out: Path, merged: bool) -> None:
    from peft_ir.retriever.encoder import BiEncoder  # noqa: PLC0415

    encoder = BiEncoder(replace(model.spec, adapter=str(model.adapter) if merged else None), device=DEVICE)
    st = encoder.model
    if not merged:
        PeftIRTransformer.tune(st[0], model.adapter)
    st.prompts = {"query": encoder.spec.query_prefix, "document": encoder.spec.passage_prefix}
    st.similarity_fn_name = "cosine" if encoder.spec.normalize else "dot"
    st.save(str(out), create_model_card=False)


def write_cross_encoder(model: TrainedModel, out: Path, merged: bool) -> None:
    import torch  # noqa: PLC0415
    from sentence_transformers import CrossEncoder  # noqa: PLC0415

    base = out / SCRATCH
    _save_reranker(model, base, merged)
    ce = CrossEncoder(str(base), device=DEVICE, activation_fn=torch.nn.Identity())
    # peft-ir's two limits plus the pair template's special tokens: the longest pair peft-ir ever scores
    tok = ce.tokenizer
    template = (len(tok("a", "b")["input_ids"]) - len(tok("a", add_special_tokens=False)["input_ids"])
                - len(tok("b", add_special_tokens=False)["input_ids"]))  # the pair template's tokens, an EOS included
    ce.max_length = model.spec.query_max_length + model.spec.passage_max_length + template
    if not merged:
        PeftIRTransformer.tune(ce[0], model.adapter)
    ce.save(str(out), create_model_card=False)
    shutil.rmtree(base)


def write_hf(model: TrainedModel, out: Path) -> None:
    if model.kind == "reranker":
        _save_reranker(model, out, merged=True)
        return
    from peft_ir.retriever.encoder import BiEncoder  # noqa: PLC0415

    encoder = BiEncoder(replace(model.spec, adapter=str(model.adapter)), device=DEVICE, merge=True)
    encoder.hf_model.save_pretrained(str(out))
    encoder.model.tokenizer.save_pretrained(str(out))


def _save_reranker(model: TrainedModel, out: Path, merged: bool) -> None:
    """The re-ranker's sequence-classification model and tokenizer as a transformers folder: merged, or the base
    with the seeded head it was trained from (the tuning, head included, is applied on top when loading)."""
    from peft_ir.reranker.model import CrossEncoder as Reranker  # noqa: PLC0415
    from peft_ir.reranker.model import load_base  # noqa: PLC0415

    if merged:
        reranker = Reranker(model.spec, adapter=model.adapter, device=DEVICE)
        hf, tokenizer = merge_tuned(reranker.model), reranker.tokenizer
    else:
        hf, tokenizer = load_base(model.spec, device=DEVICE)
    if is_causal(hf.config) and not ends_with_eos(tokenizer):
        append_eos(tokenizer)  # peft-ir ends every pair with EOS, whose state a decoder re-ranker's head reads
    hf.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


def write_peft(model: TrainedModel, out: Path) -> None:
    """peft's files of the checkpoint, the base named as the Hub knows it when it is known."""
    out.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = json.loads((model.adapter / PEFT_CONFIG_FILE).read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = hub_id(model.spec.model) or config.get("base_model_name_or_path")
    (out / PEFT_CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    shutil.copyfile(model.adapter / PEFT_WEIGHTS_FILE, out / PEFT_WEIGHTS_FILE)
