"""Each setting is defined once, as a config dataclass field: the `peft-ir` flags, the YAML sections and
`peft-ir run --check` are generated from the fields and show the same defaults and help text."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from peft_ir.cli import build_parser
from peft_ir.export.config import ExportConfig
from peft_ir.experiment.config import (
    BM25Section, EncodeSection, FuseSection, IndexSection, RerankerSection, RerankStage, RetrieverSection,
    SearchSection, TeacherSection,
)
from peft_ir.reranker.config import CrossEncoderSpec, RerankerTrainConfig
from peft_ir.indexing.config import BM25Config, FusionConfig, IndexConfig, SearchConfig
from peft_ir.retriever.config import EncodeConfig, EncoderSpec, RetrieverTrainConfig
from peft_ir.settings import flat_fields, from_flat, setting, to_flat
from peft_ir.teacher.config import AnnotateConfig, TeacherMiningConfig



@dataclasses.dataclass
class Inner:
    seed: int = setting(1, help="inner")


@dataclasses.dataclass
class Outer:
    seed: int = setting(2, help="outer")
    inner: Inner = setting(default_factory=Inner, expand=True, help="nested")


def _subparser(*path: str):  # type: ignore[no-untyped-def]
    parser = build_parser()
    for name in path:
        action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        parser = action.choices[name]
    return parser


def _options(parser) -> dict:  # type: ignore[no-untyped-def]
    return {a.dest: a for a in parser._actions if a.option_strings}


COMMANDS = [(("train", "retriever"), RetrieverTrainConfig, {"tuning", "adapter", "extra"}),
            (("train", "reranker"), RerankerTrainConfig, {"tuning"}),
            (("encode",), EncoderSpec, {"extra"}),
            (("encode",), EncodeConfig, set()),
            (("rerank",), CrossEncoderSpec, set()),
            (("index",), IndexConfig, set()),
            (("search",), SearchConfig, set()),
            (("rewrite", "vector-prf"), SearchConfig, set()),
            (("bm25", "search"), BM25Config, set()),
            (("fuse",), FusionConfig, set()),
            (("annotate",), AnnotateConfig, set()),
            (("mine",), TeacherMiningConfig, set()),
            (("export",), ExportConfig, set())]


@pytest.mark.parametrize("path, cls, skipped", COMMANDS, ids=lambda v: " ".join(v) if isinstance(v, tuple) else None)
def test_every_setting_has_a_flag_with_the_fields_default_and_help(path, cls, skipped) -> None:  # type: ignore
    options = _options(_subparser(*path))
    settings = [f for f in flat_fields(cls) if f.name not in skipped]
    assert len(settings) >= 2
    for f in settings:
        assert f.name in options, f"--{f.name.replace('_', '-')} missing from peft-ir {' '.join(path)}"
        action = options[f.name]
        assert action.option_strings == [f"--{f.name.replace('_', '-')}"] or f.type is bool or "bool" in str(f.type)
        assert f.help and action.help.replace("%%", "%").startswith(f.help), f.name
        if f.required:
            assert action.required, f.name
        else:
            expected = f.default()
            assert action.default == (list(expected) if isinstance(expected, tuple) and action.nargs else expected) \
                or action.default == expected, f.name


@pytest.mark.parametrize("section, configs, at_least", [
    (RetrieverSection, (RetrieverTrainConfig,), 20), (RerankerSection, (RerankerTrainConfig,), 20),
    (EncodeSection, (EncodeConfig,), 2), (IndexSection, (IndexConfig,), 3), (SearchSection, (SearchConfig,), 4),
    (BM25Section, (BM25Config,), 3), (FuseSection, (FusionConfig,), 5), (TeacherSection, (AnnotateConfig,), 6)],
    ids=lambda v: getattr(v, "__name__", None))
def test_yaml_sections_are_the_library_fields(section: type, configs: tuple[type, ...], at_least: int) -> None:
    """A YAML key is either what only an experiment says (how a model is trained, the re-rank stage, which runs
    are fused, the encoding length) or the very library field behind the flag of that name: same default, same
    help text."""
    library = {f.name: f for cls in configs for f in flat_fields(cls)}
    own = {f.name for base in section.__mro__[1:] if dataclasses.is_dataclass(base) for f in dataclasses.fields(base)}
    if section is RerankerSection:
        own |= {f.name for f in dataclasses.fields(RerankStage)}
    shared = 0
    for f in dataclasses.fields(section):
        if f.name in own:
            continue
        assert f.name in library, f"{section.__name__}.{f.name} is not a library setting"
        lib = library[f.name]
        assert f.metadata["help"] == lib.help
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        assert default == lib.default(), f.name
        shared += 1
    assert shared >= at_least
    assert EncodeSection().max_length == EncoderSpec().passage_max_length


@pytest.mark.parametrize("what, cls", [("retriever", RetrieverTrainConfig), ("reranker", RerankerTrainConfig)])
def test_training_commands_have_no_hand_written_setting(what: str, cls: type) -> None:
    """Every `peft-ir train` flag is a config field's, or one of the three that choose the tuning config."""
    generated = {f.name for f in flat_fields(cls)} | {"method", "budget", "tuning", "help"}
    assert set(_options(_subparser("train", what))) <= generated


def test_flags_parse_back_into_the_config(tmp_path: Path) -> None:
    parser = build_parser()
    args = parser.parse_args(["train", "reranker", "--train", "t", "--output", "o", "--negatives-window", "2", "50",
                              "--loss", "bce", "--head-seed", "7", "--no-progress", "--lr", "1e-4"])
    from peft_ir.cli.flags import config_from_args

    cfg = config_from_args(RerankerTrainConfig, args)
    assert cfg == RerankerTrainConfig(train="t", output="o", negatives_window=(2, 50), loss="bce", progress=False,
                                      lr=1e-4, cross_encoder=CrossEncoderSpec(seed=7))
    defaults = config_from_args(RetrieverTrainConfig, parser.parse_args(["train", "retriever", "--train", "t",
                                                                         "--output", "o"]))
    assert defaults == RetrieverTrainConfig(train="t", output="o")
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "reranker", "--train", "t", "--output", "o", "--loss", "hinge"])


def test_flat_view_round_trips_and_refuses_clashes() -> None:
    cfg = RerankerTrainConfig(train="t", output="o", cross_encoder=CrossEncoderSpec(query_max_length=16, seed=3))
    flat = to_flat(cfg)
    assert flat["query_max_length"] == 16 and flat["head_seed"] == 3 and flat["seed"] == 42
    assert from_flat(RerankerTrainConfig, flat) == cfg

    with pytest.raises(TypeError, match="share the flat name 'seed'"):
        flat_fields(Outer)


def test_check_shows_each_key_with_its_help_and_reloads_equal(tmp_path: Path) -> None:
    from peft_ir.experiment import load_config, to_yaml

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "configs" / "quickstart.yaml", check_files=False, cwd=root)
    text = to_yaml(cfg, comments=True)
    assert yaml.safe_load(text) == yaml.safe_load(to_yaml(cfg))
    dev = next(line for line in text.splitlines() if line.strip().startswith("dev_queries:"))
    assert dev.split("# ", 1)[1] == next(f.help for f in flat_fields(RetrieverTrainConfig) if f.name == "dev_queries")
