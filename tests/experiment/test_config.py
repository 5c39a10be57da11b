"""Config validation before any work: unknown keys (with a suggestion), types, methods, budgets, extends, --set,
missing files, inconsistent sections."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tiny import tiny_config, write_yaml
from peft_ir.errors import PeftIRError
from peft_ir.experiment import ConfigError, load_config


@pytest.fixture
def tiny(tmp_path: Path, synthetic_beir: Path, tiny_bert_dir: Path):  # type: ignore[no-untyped-def]
    """Write a tiny config with some sections changed and return its path."""
    def make(filename: str = "tiny.yaml", **sections):  # type: ignore[no-untyped-def]
        return write_yaml(tmp_path / filename, tiny_config(synthetic_beir, tiny_bert_dir, tmp_path / "runs", **sections))
    return make


def test_valid_config_loads_with_types_converted(tiny) -> None:  # type: ignore[no-untyped-def]
    cfg = load_config(tiny())
    assert cfg.retriever.lr == 5e-3  # "5e-3" (a string to PyYAML) read as a number
    assert cfg.reranker.negatives_window == (1, 20)
    assert cfg.data.test[0].name == "test" and cfg.data.train == cfg.data.beir


def test_unknown_key_names_file_and_suggests(tiny) -> None:  # type: ignore[no-untyped-def]
    path = tiny(retriever={"max_step": 3})
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "max_step:" in text)
    with pytest.raises(ConfigError, match=rf"{path}:{line}: 'retriever.max_step': unknown key; did you mean "
                                          r"'retriever.max_steps'\?"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"'serach': unknown key; did you mean 'search'\?"):
        load_config(tiny(serach={"hits": 3}))
    with pytest.raises(ConfigError, match=r"'eval.zzz': unknown key; valid keys here: measures, preset, ignore_self"):
        load_config(tiny(eval={"zzz": 1}))


@pytest.mark.parametrize("section, message", [
    ({"retriever": {"batch_size": "big"}}, r"'retriever.batch_size': expected an integer, got 'big' \(str\)"),
    ({"retriever": {"max_steps": True}}, r"'retriever.max_steps': expected an integer, got True \(bool\)"),
    ({"retriever": {"lr": "fast"}}, r"'retriever.lr': expected a number, got 'fast' \(str\)"),
    ({"reranker": {"loss": "hinge"}}, r"'reranker.loss': expected one of lce, bce, margin-mse, kl, got 'hinge'"),
    ({"retriever": {"loss": "bce"}}, r"'retriever.loss': expected one of infonce, margin-mse, kl, got 'bce'"),
    ({"reranker": {"negatives_window": [1]}}, r"'reranker.negatives_window': expected a list of 2 values"),
    ({"eval": {"measures": "nDCG@10"}}, r"'eval.measures': expected a list, got 'nDCG@10'"),
    ({"search": 5}, r"'search': expected a mapping of SearchSection settings, got 5 \(int\)"),
    ({"search": {"device": "gpu"}}, r"'search.device': expected one of auto, cpu, cuda, got 'gpu'"),
    ({"data": {"test": [{"name": "x", "topics": "t"}]}}, r"'data.test\[0\].qrels': required key is missing"),
])
def test_wrong_types_name_key_expected_and_got(tiny, section, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=message):
        load_config(tiny(**section))


@pytest.mark.parametrize("section, message", [
    ({"retriever": {"method": "lroa"}}, r"'retriever.method': unknown method 'lroa' .*did you mean 'lora'\?"),
    ({"reranker": {"method": "full", "tuning": {}, "budget": "0.5%"}}, r"'reranker.budget': method full has no size"),
    ({"retriever": {"tuning": {"r": 4, "prefix_len": 3}}}, r"'retriever.tuning': prefix_len does not apply to method iaa-l"),
    ({"retriever": {"budget": "150%", "tuning": {}}}, r"'retriever.budget': budget 150% is outside"),
    ({"retriever": {"zero_shot": True}}, r"'retriever.method': a zero-shot model is not trained"),
    ({"retriever": {"method": None, "tuning": {}}}, r"'retriever.method': set a method \(full, .*\) or retriever.zero_shot"),
    ({"reranker": {"negatives": None}}, r"'reranker.negatives': training on a BEIR folder with hard negatives needs"),
    ({"retriever": {"num_negatives": 1}}, r"'retriever.negatives': .*\(or num_negatives: 0 for in-batch"),
    ({"retriever": {"negatives": "first_stage"}}, r"'retriever.negatives': first_stage negatives come from the retriever"),
    ({"reranker": {"negatives_window": [5, 2]}}, r"'reranker.negatives_window': needs 1 <= from <= to"),
    ({"reranker": {"group_size": 1}}, r"'reranker.group_size': needs at least 2"),
    ({"reranker": {"loss": "kl"}}, r"'reranker.loss': kl distils teacher scores, and the BEIR folder .* has none"),
    ({"retriever": {"loss": "margin-mse", "cache_mini_batch": 2}},
     r"'retriever.loss': cache_mini_batch \(GradCache\) applies to the infonce loss only, not margin-mse"),
    ({"first_stage": "bm25"}, r"'retriever': no dense run uses it \(first_stage is bm25"),
    ({"retriever": None}, r"'retriever': a dense first stage needs a retriever section"),
    ({"first_stage": "run"}, r"'data.test\[0\].run': first stage 'run' needs a run file"),
    ({"fuse": {"runs": ["dense", "dense"]}}, r"'fuse.runs': needs two or more different runs"),
    ({"eval": {"measures": ["nDCG@ten"]}}, r"'eval.measures': unknown measure 'nDCG@ten'"),
    ({"name": "a/b"}, r"'name': 'a/b' must be a plain folder name"),
    ({"data": {"beir": None, "corpus": "c", "test": [{"name": "train", "topics": "t", "qrels": "q"}]}},
     r"'data.test\[0\].name': 'train' names the runs of the training queries"),
    ({"data": {"beir": None}}, r"'data': no test set"),
    ({"index": {"factory": "IVF16,Flat", "nprobe": 0}}, r"'index.nprobe': must be at least 1, got 0"),
    ({"index": {"nprobe": 8}}, r"'index.nprobe': applies to IVF indexes only, not factory 'Flat'"),
    ({"search": {"device": "cpu", "fp16_index": True}}, r"'search.fp16_index': applies to GPU search only"),
    ({"reranker": {"cross_attention": "gated"}}, r"'reranker.cross_attention': cross_attention: gated needs head: "
                                                 "cosine"),
    ({"reranker": {"cross_attention": "gated", "head": "cosine", "method": "prefix", "tuning": {"prefix_len": 2}}},
     r"'reranker.cross_attention': .*prefix's prefixes cannot enter"),
])
def test_inconsistent_sections_are_refused(tiny, section, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=message):
        load_config(tiny(**section), check_files=False)


def test_search_device_defaults_to_auto_and_cuda_needs_a_gpu(tiny, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import torch

    assert load_config(tiny()).search.device == "auto" and not load_config(tiny()).search.fp16_index
    assert load_config(tiny(search={"device": "cpu"})).search.device == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = tiny(search={"device": "cuda", "fp16_index": True})
    assert load_config(path, check_files=False).search.device == "cuda"  # consistent on paper...
    with pytest.raises(ConfigError, match=r"'search.device': cuda asked for, but neither faiss-gpu nor torch sees"):
        load_config(path)  # ...but not on this machine, which is said before any training


@pytest.mark.parametrize(("native", "gpu", "resolved"), [(True, False, "bfloat16"), (False, False, "float32"),
                                                         (True, True, "float32")])
def test_precision_auto_is_decided_by_this_machine_and_written_into_every_stage(  # type: ignore[no-untyped-def]
        tiny, monkeypatch, native: bool, gpu: bool, resolved: str) -> None:
    import torch

    from peft_ir import precision

    monkeypatch.setattr(precision, "cpu_native_bf16", lambda: native)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    cfg = load_config(tiny(precision="auto"), check_files=False)
    assert cfg.precision == "auto"  # recorded as written, and as resolved in each section
    assert cfg.encode.dtype == cfg.reranker.rerank_dtype == resolved
    assert cfg.retriever.bf16 is cfg.reranker.bf16 is (resolved == "bfloat16")


def test_a_run_folders_resolved_precision_reloads_on_any_machine(tiny, monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`peft-ir run --check-expected RUN_DIR` reads config.resolved.yaml, whose sections carry what auto decided."""
    import torch

    from peft_ir import precision
    from peft_ir.experiment.loading import to_yaml

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_native_bf16", lambda: True)
    resolved = tmp_path / "config.resolved.yaml"
    resolved.write_text(to_yaml(load_config(tiny(precision="auto"), check_files=False)))
    monkeypatch.setattr(precision, "cpu_native_bf16", lambda: False)  # re-checked where auto would say float32
    again = load_config(resolved, check_files=False)
    assert again.encode.dtype == again.reranker.rerank_dtype == "bfloat16" and again.retriever.bf16


def test_precision_by_name_and_its_conflicts(tiny, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import torch

    cfg = load_config(tiny(precision="bfloat16"), check_files=False)
    assert (cfg.encode.dtype, cfg.reranker.rerank_dtype, cfg.retriever.bf16, cfg.reranker.bf16) == \
        ("bfloat16", "bfloat16", True, True)
    plain = load_config(tiny(), check_files=False)
    assert plain.precision is None and plain.encode.dtype == "float32" and not plain.reranker.bf16
    with pytest.raises(ConfigError, match=r"'encode.dtype'.*precision: float32 makes it float32; remove one"):
        load_config(tiny(precision="float32", encode={"dtype": "bfloat16"}), check_files=False)
    assert load_config(tiny(precision="bfloat16", encode={"dtype": "bfloat16"}), check_files=False).reranker.bf16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"'reranker.rerank_dtype'.*float16 needs a GPU"):
        load_config(tiny(reranker={"rerank_dtype": "float16"}), check_files=False)


def test_a_config_computing_in_emulated_bfloat16_is_warned_before_any_stage(tiny, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    """`peft-ir run` (and --check) say at load that the stages will run in bfloat16 on a CPU that emulates it (a
    training step 11x slower, bench/results/cpu_bf16.md); re-checking a finished run's record says nothing."""
    import torch

    from peft_ir import precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_native_bf16", lambda: False)
    monkeypatch.setattr(precision, "_said_emulated", False)
    with caplog.at_level(logging.WARNING, logger="peft_ir.precision"):
        load_config(tiny(precision="bfloat16"), check_files=False)  # --check-expected: nothing will compute
        load_config(tiny())  # float32
        assert "bfloat16" not in caplog.text
        load_config(tiny(precision="bfloat16"))
    assert ("this config computes (retriever.bf16, encode.dtype, reranker.bf16, reranker.rerank_dtype) in bfloat16 "
            "on a CPU without native bfloat16") in caplog.text


def test_unreachable_budget_is_refused_before_any_work(tiny) -> None:  # type: ignore[no-untyped-def]
    # one prefix vector per layer of the tiny model is already far above 0.001 % of its parameters
    path = tiny(retriever={"method": "prefix", "budget": "0.001%", "tuning": {}})
    load_config(path, check_files=False)  # consistent on paper...
    with pytest.raises(ConfigError, match=r"'retriever.budget': method prefix cannot reach"):
        load_config(path)  # ...but not on this model
    assert not (path.parent / "runs").exists()


def test_missing_inputs_are_named(tiny, tmp_path: Path, synthetic_beir: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=r"'data.beir': .*nowhere not found"):
        load_config(tiny(data={"beir": str(tmp_path / "nowhere")}))
    with pytest.raises(ConfigError, match=r"'data.beir': .*dev.tsv.*not a BEIR folder with split 'dev'"):
        load_config(tiny(data={"beir": str(synthetic_beir), "test_split": "dev"}))
    with pytest.raises(ConfigError, match=r"'reranker.model': cannot load the config of model"):
        load_config(tiny(reranker={"model": str(tmp_path)}))
    with pytest.raises(ConfigError, match=r"'reranker.negatives': .*missing.trec not found"):
        load_config(tiny(reranker={"negatives": str(tmp_path / "missing.trec")}))


def test_extends_chain_merges_deeply_and_names_the_file_at_fault(tmp_path: Path, tiny) -> None:  # type: ignore
    tiny("base.yaml")
    write_yaml(tmp_path / "sub" / "mid.yaml", {"extends": "../base.yaml", "retriever": {"max_steps": 9},
                                              "reranker": {"hits": 5}})
    leaf = write_yaml(tmp_path / "sub" / "leaf-run.yaml", {"extends": "mid.yaml", "name": None,
                                                          "retriever": {"max_steps": 11}})
    cfg = load_config(leaf)
    assert cfg.name == "leaf-run"                           # the file's stem when no name is set
    assert cfg.retriever.max_steps == 11                    # leaf over mid over base
    assert cfg.reranker.hits == 5 and cfg.reranker.group_size == 4  # mid over base, base kept beside it
    assert cfg.retriever.tuning == {"r": 4, "ar": 4}
    write_yaml(tmp_path / "sub" / "mid.yaml", {"extends": "../base.yaml", "reranker": {"hitz": 5}})
    with pytest.raises(ConfigError, match=rf"{tmp_path / 'sub' / 'mid.yaml'}:3: 'reranker.hitz': unknown key"):
        load_config(leaf)
    write_yaml(tmp_path / "sub" / "mid.yaml", {"extends": "leaf-run.yaml"})
    with pytest.raises(ConfigError, match="'extends' forms a cycle"):
        load_config(leaf)
    write_yaml(tmp_path / "sub" / "mid.yaml", {"extends": "../absent.yaml"})
    with pytest.raises(ConfigError, match=r"'extends': .*absent.yaml not found"):
        load_config(leaf)


def test_set_overrides_parse_yaml_scalars(tiny) -> None:  # type: ignore[no-untyped-def]
    path = tiny()
    cfg = load_config(path, ["retriever.max_steps=12", "reranker.lr=3e-4", "eval.measures=[nDCG@10, RR@10]",
                             "fuse.runs=[dense, bm25]", "retriever.tuning.r=8", "name=other"])
    assert cfg.retriever.max_steps == 12 and cfg.reranker.lr == 3e-4 and cfg.name == "other"
    assert cfg.eval.measures == ["nDCG@10", "RR@10"] and cfg.fuse is not None and cfg.fuse.method == "rrf"
    assert cfg.retriever.tuning == {"r": 8, "ar": 4}
    assert load_config(path, ["reranker.dev_seed=7"]).reranker.dev_seed == 7
    assert load_config(path).retriever.dev_seed is None  # default: the experiment's seed splits the data
    assert load_config(path, ["retriever.budget=0.005", "retriever.tuning={}"]).retriever.budget == 0.005
    with pytest.raises(ConfigError, match=r"'retriever.budget': expected a string or a number or null, got True"):
        load_config(path, ["retriever.budget=true"])
    with pytest.raises(ConfigError, match=r"--set: 'retriever.max_step': unknown key; did you mean"):
        load_config(path, ["retriever.max_step=3"])
    with pytest.raises(ConfigError, match=r"--set: 'retriever.max_steps': expected an integer, got 'ten'"):
        load_config(path, ["retriever.max_steps=ten"])
    with pytest.raises(ConfigError, match=r"--set: 'retriever.dev_seed': expected an integer, got 'x'"):
        load_config(path, ["retriever.dev_seed=x"])
    with pytest.raises(ConfigError, match=r"--set 'retriever': expected KEY=VALUE"):
        load_config(path, ["retriever"])
    with pytest.raises(ConfigError, match=r"'seed' is 7, not a section"):
        load_config(path, ["seed.x=1"])


def test_relative_paths_resolve_against_the_working_directory(tmp_path: Path, synthetic_beir: Path,
                                                             tiny_bert_dir: Path, monkeypatch) -> None:  # type: ignore
    (tmp_path / "data").symlink_to(synthetic_beir)
    path = write_yaml(tmp_path / "configs" / "x.yaml",
                      tiny_config(Path("data"), tiny_bert_dir, Path("out")))
    monkeypatch.chdir(tmp_path)
    cfg = load_config(path)
    assert cfg.data.beir == str(tmp_path / "data") and cfg.output == str(tmp_path / "out")
    monkeypatch.chdir(tmp_path / "configs")  # the same file from elsewhere finds no data
    with pytest.raises(PeftIRError, match=r"'data.beir': .*configs/data not found"):
        load_config(path)


def test_training_data_named_by_id(tiny, tmp_path: Path, tevatron_hf_dir: Path,  # type: ignore[no-untyped-def]
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """data.train as hf: / irds: ids: a local datasets folder made absolute; a Hub id that this machine cannot
    read is a note for `--check` (notes given) but refused before a run (none given); malformed ids refused."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.chdir(tevatron_hf_dir.parent)
    file_like = {"retriever": {"negatives": None}, "reranker": {"negatives": None}}
    cfg = load_config(tiny(data={"train": f"hf:./{tevatron_hf_dir.name}:train"}, **file_like))
    assert cfg.data.train == f"hf:{tevatron_hf_dir}:train"
    hub = tiny(data={"train": "hf:org/absent"}, **file_like)
    notes: list[str] = []
    assert load_config(hub, notes=notes).data.train == "hf:org/absent"
    assert len(notes) == 1 and notes[0].startswith("data.train: hf:org/absent: Hub dataset 'org/absent' is not in")
    with pytest.raises(ConfigError, match=r"'data.train': hf:org/absent: HF_HUB_OFFLINE is set .*hf download"):
        load_config(hub)
    with pytest.raises(ConfigError, match=r"'data.train': hf:not a/hub/id: .*neither an existing local folder"):
        load_config(tiny(data={"train": "hf:not a/hub/id"}, **file_like), check_files=False)
    with pytest.raises(ConfigError, match=r"'reranker.negatives': a training file carries its own negatives"):
        load_config(tiny(data={"train": "hf:org/absent"}, retriever={"negatives": None}), check_files=False)


def test_check_notes_a_hub_name_it_cannot_read_but_refuses_a_missing_path(tiny, tmp_path: Path,  # type: ignore
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """`--check` on a machine without a Hub model notes that it is fetched at run time; a name with two slashes
    can only be a path (another run's output, say), so its absence fails the check as it would fail the run."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.chdir(tmp_path)
    notes: list[str] = []
    load_config(tiny(retriever={"model": "org/absent"}), notes=notes)
    assert len(notes) == 1 and notes[0].startswith("retriever.model: 'org/absent' is not at hand here")
    with pytest.raises(ConfigError, match=r"'retriever.model': .*runs/teacher/retriever"):
        load_config(tiny(retriever={"model": "runs/teacher/retriever"}), notes=[])


def test_training_on_the_test_split_is_refused(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # data.beir's train split set to its test split: the models, their dev queries and a fusion weight would all see
    # the test queries
    with pytest.raises(ConfigError, match=r"'data\.train_split': 'test' is also the split of test set 'test'"):
        load_config(tiny(data={"train_split": "test"}), check_files=False)
    zero_shot = {"retriever": {"zero_shot": True, "method": None, "tuning": None}}
    assert load_config(tiny(data={"train_split": "test"}, **zero_shot, reranker=None),
                       check_files=False).data.train_split == "test"  # nothing trained, nothing chosen: allowed


def test_gated_cross_attention_on_a_family_it_cannot_drive_is_refused_before_any_work(  # type: ignore[no-untyped-def]
        tiny, tmp_path: Path, minilm_path: str) -> None:
    from transformers import AutoModel, AutoTokenizer

    from tests.tiny_models import tiny_config as tiny_model_config

    folder = tmp_path / "distilbert"
    tok = AutoTokenizer.from_pretrained(minilm_path)
    AutoModel.from_config(tiny_model_config("distilbert", vocab_size=tok.vocab_size)).save_pretrained(folder)
    tok.save_pretrained(folder)
    gated = {"cross_attention": "gated", "head": "cosine"}
    assert load_config(tiny(reranker=gated)).reranker.cross_attention == "gated"
    with pytest.raises(ConfigError, match=r"'reranker.model': cross_attention: gated supports model types bert, "
                                          r".*; this model is 'distilbert'"):
        load_config(tiny(reranker={**gated, "model": str(folder)}))
