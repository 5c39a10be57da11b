"""The real all-MiniLM-L6-v2 on SciFact texts: an export loaded by sentence-transformers (no peft-ir import) scores
as peft-ir does, within 1e-5, and its card names the Hub's base model and its licence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from export_texts import Variant

from peft_ir.export.build import export_model
from peft_ir.export.config import ExportConfig
from peft_ir.models import DEFAULT_HUB_ID
from peft_ir.reranker.config import CrossEncoderSpec
from peft_ir.retriever.config import EncoderSpec

pytestmark = [pytest.mark.slow,  # peft calls transformers' deprecated is_gradient_checkpointing loading an adapter
              pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")]
TOL = 1e-5


@pytest.fixture(scope="module")
def scifact_texts(scifact: Path, minilm_path: str) -> tuple[list[str], list[str]]:
    """4 test queries and 4 abstracts judged for test queries (title and text joined, as peft-ir encodes them), all
    short enough for the re-ranker's limits (32 and 192 tokens): peft-ir cuts query and passage separately,
    sentence-transformers a pair as a whole, so only pairs that fit are scored alike (the card says so)."""
    from transformers import AutoTokenizer

    from peft_ir.data import BeirDataset, load_corpus

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)

    def fits(text: str, limit: int) -> bool:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= limit

    ds = BeirDataset(scifact, "test")
    qrels, queries, corpus = ds.qrels(), ds.queries(), load_corpus(ds.corpus_path)
    judged = [corpus[d].joined() for q in sorted(qrels) for d in sorted(qrels[q])]
    return ([queries[q] for q in sorted(qrels) if fits(queries[q], 32)][:4],
            [text for text in judged if fits(text, 192)][:4])


def test_retriever_merged_and_peft_exports_score_as_peft_ir(variant: Variant, scifact_texts: tuple,
                                                            minilm_path: str, tmp_path: Path) -> None:
    from huggingface_hub import ModelCard
    from sentence_transformers import SentenceTransformer

    from peft_ir.retriever.encoder import BiEncoder

    queries, passages = scifact_texts
    train_dir = variant("retriever", "lora", spec=EncoderSpec(), lora_r=4)
    ours = BiEncoder(EncoderSpec(adapter=str(train_dir / "adapter")), device="cpu", merge=False)
    expected = np.concatenate([ours.encode_queries(queries), ours.encode_passages(passages)])
    assert np.abs(expected[:4] - BiEncoder(EncoderSpec(), device="cpu").encode_queries(queries)).max() > 1e-3

    export_model(train_dir, ExportConfig(format="sentence-transformers", output=str(tmp_path / "st"), merge=True))
    st = SentenceTransformer(str(tmp_path / "st"), device="cpu")
    got = np.concatenate([st.encode_query(queries), st.encode_document(passages)])
    assert got.shape == (8, 384) and np.abs(got - expected).max() <= TOL

    export_model(train_dir, ExportConfig(format="peft", output=str(tmp_path / "peft")))
    assert json.loads((tmp_path / "peft" / "adapter_config.json").read_text())["base_model_name_or_path"] \
        == DEFAULT_HUB_ID
    plain = SentenceTransformer(minilm_path, device="cpu")
    plain.load_adapter(str(tmp_path / "peft"))
    plain.eval()
    got = np.concatenate([plain.encode_query(queries), plain.encode_document(passages)])
    assert np.abs(got - expected).max() <= TOL

    card = ModelCard.load(tmp_path / "st" / "README.md").data
    assert card.base_model == DEFAULT_HUB_ID and card.license == "apache-2.0"


def test_reranker_merged_export_scores_as_peft_ir(variant: Variant, scifact_texts: tuple, tmp_path: Path) -> None:
    from sentence_transformers import CrossEncoder

    from peft_ir.reranker.model import CrossEncoder as Reranker

    queries, passages = scifact_texts
    spec = CrossEncoderSpec()
    train_dir = variant("reranker", "lora", spec=spec, lora_r=4)
    export_model(train_dir, ExportConfig(format="cross-encoder", output=str(tmp_path / "ce"), merge=True))
    ours = Reranker(spec, adapter=train_dir / "adapter", device="cpu")
    pairs = [(q, p) for q in queries for p in passages]
    expected = np.asarray(ours.score([q for q, _ in pairs], [p for _, p in pairs]))
    got = CrossEncoder(str(tmp_path / "ce"), device="cpu").predict(pairs)
    assert got.shape == (len(pairs),) and np.abs(got - expected).max() <= TOL
    base = Reranker(spec, device="cpu").score([q for q, _ in pairs[:4]], [p for _, p in pairs[:4]])
    assert np.abs(expected[:4] - np.asarray(base)).max() > 1e-3
