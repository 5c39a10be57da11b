"""Training data named by id: `hf:` (datasets: a save_to_disk folder, a folder of data files, a Hub id from the
local cache) and `irds:` triples (ir_datasets, here a stand-in module: the real one downloads); refused clearly,
before any model is loaded, when they cannot be read. Nothing here touches the network."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from peft_ir.cli import main
from peft_ir.data.examples import load_examples, require_training_source, training_source_note
from peft_ir.data.hf import absolute_hf, hf_examples, parse_hf
from peft_ir.data.irds import irds_examples
from peft_ir.errors import InputError, PeftIRError


def _tevatron(i: int, **change: object) -> dict:
    row = {"query_id": f"q{i}", "query": f"query {i}",
           "positive_passages": [{"docid": f"p{i}", "title": f"T{i}", "text": f"positive {i}"}],
           "negative_passages": [{"docid": f"n{i}-{j}", "title": "", "text": f"negative {i}.{j}"} for j in range(3)]}
    return row | change


def _save(rows: list[dict], folder: Path, split: str | None = None) -> Path:
    from datasets import Dataset, DatasetDict

    data = Dataset.from_list(rows)
    (DatasetDict({split: data}) if split else data).save_to_disk(str(folder))
    return folder


def test_save_to_disk_folder_in_tevatron_schema(tmp_path: Path) -> None:
    folder = _save([_tevatron(i) for i in range(6)], tmp_path / "ds")
    examples = list(hf_examples(f"hf:{folder}"))
    assert len(examples) == 6
    assert examples[2].query == "query 2" and examples[2].query_id == "q2"
    assert examples[2].positives == ["T2 positive 2"]  # title and text joined as the file readers join them
    assert examples[2].negatives == ["negative 2.0", "negative 2.1", "negative 2.2"]
    assert [e.query_id for e in hf_examples(f"hf:{folder}", limit=3)] == ["q0", "q1", "q2"]  # the first rows only


def test_splits_of_a_dataset_dict_and_a_folder_of_data_files(tmp_path: Path) -> None:
    folder = _save([{"query": f"q{i}", "pos": [f"p{i}"], "neg": [f"n{i}"]} for i in range(4)], tmp_path / "dd", "dev")
    assert [e.positives for e in hf_examples(f"hf:{folder}:dev")] == [["p0"], ["p1"], ["p2"], ["p3"]]
    with pytest.raises(PeftIRError, match=r"split 'train'.*Available splits: \['dev'\]"):
        list(hf_examples(f"hf:{folder}"))
    files = tmp_path / "files"
    files.mkdir()
    (files / "train.jsonl").write_text("".join(json.dumps(_tevatron(i)) + "\n" for i in range(3)))
    (files / "test.jsonl").write_text(json.dumps(_tevatron(9)) + "\n")
    assert [e.query_id for e in hf_examples(f"hf:{files}:train")] == ["q0", "q1", "q2"]
    assert [e.query_id for e in hf_examples(f"hf:{files}:test")] == ["q9"]


def test_a_repository_with_a_legacy_loading_script_is_read_through_its_data_files(tmp_path: Path) -> None:
    """Tevatron/msmarco-passage carries msmarco-passage.py, which datasets >= 4 refuses to run."""
    repo = tmp_path / "msmarco-passage"
    repo.mkdir()
    (repo / "msmarco-passage.py").write_text("import datasets  # a loading script\n")
    (repo / "train.jsonl").write_text("".join(json.dumps(_tevatron(i)) + "\n" for i in range(2)))
    assert [e.query_id for e in hf_examples(f"hf:{repo}")] == ["q0", "q1"]


@pytest.mark.parametrize(("change", "field"), [
    ({"query": ""}, "query"),
    ({"positive_passages": []}, "positive_passages"),
    ({"positive_passages": [{"docid": "p", "title": "t", "text": None}]}, "positive_passages[0].text"),
])
def test_a_bad_row_names_the_dataset_the_row_and_the_field(change: dict, field: str, tmp_path: Path) -> None:
    folder = _save([_tevatron(0), _tevatron(1), _tevatron(2, **change)], tmp_path / "bad")
    with pytest.raises(InputError) as info:
        list(hf_examples(f"hf:{folder}"))
    assert info.value.path == f"hf:{folder} row 2" and info.value.field == field
    assert str(info.value).startswith(f"hf:{folder} row 2: field '{field}':")


def test_ids_are_parsed_local_folders_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "local").mkdir()
    default = parse_hf("hf:Tevatron/msmarco-passage")
    assert (default.name, default.split, default.local) == ("Tevatron/msmarco-passage", "train", False)
    hub = parse_hf("hf:Tevatron/msmarco-passage:dev")
    assert not hub.local and hub.name == "Tevatron/msmarco-passage" and hub.split == "dev"
    assert absolute_hf("hf:local", tmp_path) == f"hf:{tmp_path / 'local'}:train"
    assert absolute_hf("hf:Tevatron/msmarco-passage", tmp_path) == "hf:Tevatron/msmarco-passage"
    with pytest.raises(PeftIRError, match="neither an existing local folder nor a Hub dataset id"):
        parse_hf("hf:not a/hub/id")
    with pytest.raises(PeftIRError, match="expected hf:DATASET"):
        parse_hf("hf:")
    with pytest.raises(PeftIRError, match="is not a folder"):
        training_source_note(f"hf:{tmp_path / 'missing'}")


def _hub_cache(root: Path, repo_id: str, rows: list[dict]) -> Path:
    """What `hf download REPO --repo-type dataset` leaves in the Hugging Face cache, with one data file."""
    repo = root / f"datasets--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_offline_a_hub_id_is_read_from_the_cache_or_refused_with_what_to_do(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(_hub_cache(tmp_path, "org/cached", [_tevatron(0)])))
    assert training_source_note("hf:org/cached") is None
    require_training_source("hf:org/cached")
    assert [e.query_id for e in hf_examples("hf:org/cached:train")] == ["q0"]

    note = training_source_note("hf:org/absent")
    assert note and "'org/absent' is not in the local Hugging Face cache" in note and "run time" in note
    with pytest.raises(PeftIRError) as info:
        require_training_source("hf:org/absent:train")
    assert "hf:org/absent:train: HF_HUB_OFFLINE is set" in str(info.value)
    assert "hf download org/absent --repo-type dataset" in str(info.value) and "training file" in str(info.value)
    with pytest.raises(PeftIRError, match=r"hf:org/absent: cannot read split 'train' of org/absent .*hf download"):
        load_examples("hf:org/absent")


def test_without_a_network_a_hub_id_that_is_not_cached_is_refused(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import HfApi, constants

    def unreachable(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(HfApi, "dataset_info", unreachable)  # what a machine without a network meets
    with pytest.raises(PeftIRError, match=r"hf:org/absent: cannot reach the Hugging Face Hub for dataset "
                                          r"'org/absent' \(ConnectionError.*hf download org/absent"):
        require_training_source("hf:org/absent")


def test_the_trainers_refuse_an_unreadable_source_before_loading_any_model(tmp_path: Path,
                                                                           capfd: pytest.CaptureFixture) -> None:
    """The model named does not exist: the error is about the data, so nothing tried to load the model first."""
    for kind, source in (("retriever", "hf:org/absent"), ("reranker", "hf:org/absent")):
        assert main(["train", kind, "--train", source, "--output", str(tmp_path / kind),
                     "--model", str(tmp_path / "no-model")]) == 2
        err = capfd.readouterr().err
        assert f"peft-ir train: error: {source}: HF_HUB_OFFLINE is set" in err and "no-model" not in err
        assert not (tmp_path / kind).exists()


# -- irds: training triples ---------------------------------------------------------------------------------------
class FakeIrds:
    """ir_datasets' interface as the triples reader uses it: load(id) -> queries, docpairs and a docs store."""

    def __init__(self, pairs: list[tuple[str, str, str]]):
        self.pairs = pairs
        self.queries = {f"q{i}": f"query {i}" for i in range(4)}
        self.docs = {f"d{i}": SimpleNamespace(doc_id=f"d{i}", text=f"passage {i}") for i in range(20)}

    def load(self, dataset_id: str) -> SimpleNamespace:
        if dataset_id != "msmarco-passage/train/triples-small":
            raise KeyError(dataset_id)
        return SimpleNamespace(
            has_docpairs=lambda: True, has_queries=lambda: True, has_docs=lambda: True,
            queries_iter=lambda: (SimpleNamespace(query_id=q, text=t) for q, t in self.queries.items()),
            docpairs_iter=lambda: (SimpleNamespace(query_id=q, doc_id_a=a, doc_id_b=b) for q, a, b in self.pairs),
            docs_store=lambda: SimpleNamespace(get_many=lambda ids: {d: self.docs[d] for d in ids if d in self.docs}))


TRIPLES = "irds:msmarco-passage/train/triples-small"
PAIRS = [("q0", "d0", "d10"), ("q1", "d1", "d11"), ("q0", "d0", "d12"), ("q2", "d2", "d13"), ("q0", "d0", "d14"),
         ("q1", "d1", "d15"), ("q0", "d0", "d16")]


def test_irds_triples_are_grouped_by_query_with_their_texts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ir_datasets", FakeIrds(PAIRS))
    examples = irds_examples(TRIPLES)
    assert [(e.query_id, e.query) for e in examples] == [("q0", "query 0"), ("q1", "query 1"), ("q2", "query 2")]
    assert examples[0].positives == ["passage 0"]
    assert examples[0].negatives == ["passage 10", "passage 12", "passage 14", "passage 16"]
    capped = irds_examples(TRIPLES, limit=2, negatives=2)  # the first 2 queries, their first 2 negatives each
    assert [(e.query_id, e.negatives) for e in capped] == [("q0", ["passage 10", "passage 12"]),
                                                           ("q1", ["passage 11", "passage 15"])]
    examples, distractors = load_examples(TRIPLES, num_negatives=1)
    assert [e.negatives for e in examples] == [["passage 10"], ["passage 11"], ["passage 13"]] and distractors == []
    require_training_source(TRIPLES)  # reads the first triple, as it does before a training loads its model
    assert "downloads its files on first use" in (training_source_note(TRIPLES) or "")


def test_irds_triples_naming_what_is_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ir_datasets", FakeIrds([("q0", "d0", "d10"), ("q9", "d1", "d11")]))
    with pytest.raises(InputError, match=r"triples-small pair 1: field 'query_id': 'q9' is not among"):
        irds_examples(TRIPLES)
    monkeypatch.setitem(sys.modules, "ir_datasets", FakeIrds([("q0", "d0", "d99")]))
    with pytest.raises(InputError, match=r"field 'doc_id': 1 docid\(s\) .* absent from the docs store, e.g. 'd99'"):
        irds_examples(TRIPLES)
    with pytest.raises(PeftIRError, match="unknown ir_datasets id 'msmarco-passage/train/nothing'"):
        training_source_note("irds:msmarco-passage/train/nothing")


def test_without_ir_datasets_an_irds_source_is_a_note_for_check_and_refused_for_training(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "ir_datasets", None)  # import ir_datasets raises ImportError
    note = training_source_note(TRIPLES)
    assert note and note.startswith(f"{TRIPLES}: the ir_datasets package is not installed")
    assert main(["train", "reranker", "--train", TRIPLES, "--output", str(tmp_path / "r"),
                 "--model", str(tmp_path / "no-model")]) == 2
    err = capfd.readouterr().err
    assert f"{TRIPLES}: the ir_datasets package is not installed: pip install ir_datasets" in err
    assert "export the triples to a training file" in err and "no-model" not in err
