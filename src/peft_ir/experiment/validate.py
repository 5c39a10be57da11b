"""Everything checked before an experiment does any work: consistent sections, known methods and measures,
reachable budgets, and (with `check_files`) every input file and model present.

Also fills what the `data.beir` shorthand implies and makes relative paths absolute (against the working
directory), so that `config.resolved.yaml` says exactly what ran.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import re
from pathlib import Path
from typing import Any

from peft_ir.errors import PeftIRError
from peft_ir.experiment.config import (AUTO, DEV_SET, NEGATIVE_SOURCES, TEACHER_RUNS, DataConfig, ExperimentConfig,
                                       ModelSection, TestSet)
from peft_ir.experiment.expect import validate_expect
from peft_ir.experiment.schema import Origins, fail
from peft_ir.settings import default_of
from peft_ir.teacher.config import FUSION_PREFIX
from peft_ir.training.tracking import contradiction, missing_package

log = logging.getLogger(__name__)

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
IVF_FACTORY = re.compile(r"(?:^|,)\s*(?:IVF|IMI)")  # an inverted-file stage in a FAISS factory string


# -- paths -------------------------------------------------------------------------------------------------------
def _abs(value: str | None, cwd: Path) -> str | None:
    if value is None or value.startswith("irds:"):
        return value
    return os.path.normpath(cwd / Path(value).expanduser())


def _abs_train(value: str | None, cwd: Path) -> str | None:
    """Training data: a path made absolute, an `hf:` local folder too (its Hub ids and `irds:` ids as they are)."""
    from peft_ir.data.hf import absolute_hf, is_hf  # noqa: PLC0415

    if not is_hf(value):
        return _abs(value, cwd)
    try:
        return absolute_hf(value, cwd)  # type: ignore[arg-type]
    except PeftIRError:
        return value  # malformed: refused with its key by validate()


def _abs_model(value: str | None, cwd: Path) -> str | None:
    """A model that exists as a local folder becomes absolute; anything else is a name (embedded or hub)."""
    if value is None:
        return None
    local = cwd / Path(value).expanduser()
    return os.path.normpath(local) if local.exists() else value


def _abs_negatives(value: str | None, cwd: Path) -> str | None:
    return value if value is None or value in NEGATIVE_SOURCES else _abs(value, cwd)


def resolve_paths(cfg: ExperimentConfig, cwd: Path) -> ExperimentConfig:
    """Absolute paths everywhere, and the `data.beir` shorthand expanded into train, corpus and one test set."""
    d = cfg.data
    beir = _abs(d.beir, cwd)
    tests = [dataclasses.replace(t, topics=_abs(t.topics, cwd), qrels=_abs(t.qrels, cwd), run=_abs(t.run, cwd))
             for t in d.test]
    if beir and not tests:
        tests = [TestSet(name=d.test_split, topics=beir, qrels=beir, split=d.test_split)]
    data = DataConfig(beir=beir, train_split=d.train_split, test_split=d.test_split,
                      train=_abs_train(d.train, cwd) or (beir if _needs_train(cfg) else None),
                      build_train_from=_abs(d.build_train_from, cwd), corpus=_abs(d.corpus, cwd) or beir, test=tests)
    sections = {}
    for key in ("retriever", "reranker"):
        section = getattr(cfg, key)
        if section is not None:
            sections[key] = dataclasses.replace(section, model=_abs_model(section.model, cwd),
                                                negatives=_abs_negatives(section.negatives, cwd))
    if cfg.teacher is not None and cfg.teacher_fusion() is None:  # a model teacher: a folder or a hub name
        sections["teacher"] = dataclasses.replace(cfg.teacher, teacher=_abs_model(cfg.teacher.teacher, cwd))
    return dataclasses.replace(cfg, data=data, output=_abs(cfg.output, cwd), **sections)


PRECISION_KEYS = ("retriever.bf16", "encode.dtype", "reranker.bf16", "reranker.rerank_dtype", "teacher.teacher_dtype")


def resolve_precision(cfg: ExperimentConfig, origins: Origins) -> ExperimentConfig:
    """`precision` written out into the sections' own settings (auto decided on this machine, and logged). A section
    that sets one of them to something else is refused: one place says how the run computes. A config whose sections
    all carry the precision already (a run folder's config.resolved.yaml) loads as it is, wherever auto was decided."""
    if cfg.precision is None:
        return cfg
    parts = _precision_parts(cfg)
    values = {key: getattr(part, name) for key, (part, name) in parts.items() if part is not None}
    defaults = {key: default_of(type(part), name) for key, (part, name) in parts.items() if part is not None}
    dtype = cfg.precision
    if dtype == "auto" and {_as_dtype(k, v) for k, v in values.items()} == {"bfloat16"}:
        dtype = "bfloat16"  # resolved already (a run folder's record)
    elif dtype == "auto":
        import torch  # noqa: PLC0415

        from peft_ir.precision import cpu_native_bf16  # noqa: PLC0415

        gpu, native = torch.cuda.is_available(), cpu_native_bf16()
        dtype = "bfloat16" if native and not gpu else "float32"
        why = "a GPU is visible" if gpu else "this CPU computes bfloat16 natively" if native else \
            "this CPU has no native bfloat16 (AVX512-BF16 or AMX)"
        log.info("precision auto: %s (%s)", dtype, why)
    for key, value in values.items():
        if value != defaults[key] and _as_dtype(key, value) != dtype:
            raise fail(key, origins, f"precision: {cfg.precision} makes it {dtype}; remove one of the two")
    bf16 = dtype == "bfloat16"
    sections: dict[str, Any] = {"encode": dataclasses.replace(cfg.encode, dtype=dtype)}
    if cfg.retriever is not None:
        sections["retriever"] = dataclasses.replace(cfg.retriever, bf16=bf16)
    if cfg.reranker is not None:
        sections["reranker"] = dataclasses.replace(cfg.reranker, bf16=bf16, rerank_dtype=dtype)
    if "teacher.teacher_dtype" in parts and cfg.teacher is not None:
        sections["teacher"] = dataclasses.replace(cfg.teacher, teacher_dtype=dtype)
    return dataclasses.replace(cfg, **sections)


def _precision_parts(cfg: ExperimentConfig) -> dict[str, tuple[Any, str]]:
    """Each precision setting's key -> (its section, or None when absent; the field's name)."""
    parts = {key: (getattr(cfg, key.split(".")[0]), key.split(".")[1]) for key in PRECISION_KEYS}
    if cfg.teacher_fusion() is not None:  # a fusion teacher reads its runs' scores: it computes nothing
        del parts["teacher.teacher_dtype"]
    return parts


def _as_dtype(key: str, value: Any) -> str:
    """A precision setting's value as a type name (the sections' `bf16` flags are booleans)."""
    return ("bfloat16" if value else "float32") if key.endswith(".bf16") else str(value)


def warn_emulated_precision(cfg: ExperimentConfig) -> None:
    """Before the first stage: say whether the config computes in bfloat16 on a CPU that only emulates it (several
    times slower than float32), rather than leave it to the first stage's step times."""
    bf16 = [key for key, (part, name) in _precision_parts(cfg).items()
            if part is not None and _as_dtype(key, getattr(part, name)) == "bfloat16"]
    if not bf16:
        return
    import torch  # noqa: PLC0415

    from peft_ir.precision import warn_emulated_bf16  # noqa: PLC0415

    if not torch.cuda.is_available():
        warn_emulated_bf16(f"this config computes ({', '.join(bf16)})")


def _needs_train(cfg: ExperimentConfig) -> bool:
    """Whether the training split is read: a model trains, or the fusion weight is chosen on its dev queries."""
    auto = cfg.reranker is not None and cfg.reranker.fuse_weight == AUTO
    return cfg.trains(cfg.retriever) or cfg.trains(cfg.reranker) or auto


# -- consistency --------------------------------------------------------------------------------------------------
def validate(cfg: ExperimentConfig, origins: Origins) -> None:
    """Cross-key rules that the types alone cannot express; raises ConfigError naming the key and its file."""
    if not SAFE_NAME.match(cfg.name):
        raise fail("name", origins, f"{cfg.name!r} must be a plain folder name (letters, digits, '.', '_', '-')")
    kinds = cfg.run_kinds()
    _validate_data(cfg, origins, kinds)
    if "dense" in kinds and cfg.retriever is None:
        raise fail("retriever", origins, "a dense first stage needs a retriever section "
                   "(retriever.zero_shot: true uses the model as it is)")
    teacher_only = "dense" in cfg.teacher_run_kinds() and not cfg.trains(cfg.retriever)  # names the start model
    if "dense" not in kinds and cfg.retriever is not None and not teacher_only:
        raise fail("retriever", origins, f"no dense run uses it (first_stage is {cfg.first_stage}"
                   f"{', fuse.runs ' + str(cfg.fuse.runs) if cfg.fuse else ''}): remove it or set first_stage: dense")
    if cfg.fuse is not None:
        if len(set(cfg.fuse.runs)) != len(cfg.fuse.runs) or len(cfg.fuse.runs) < 2:
            raise fail("fuse.runs", origins, f"needs two or more different runs, got {cfg.fuse.runs}")
        if cfg.fuse.weights is not None and len(cfg.fuse.weights) != len(cfg.fuse.runs):
            raise fail("fuse.weights", origins, f"needs one weight per run ({len(cfg.fuse.runs)}), "
                       f"got {cfg.fuse.weights}")
        _positive("fuse.hits", cfg.fuse.hits, origins)
    for key in ("retriever", "reranker"):
        section = getattr(cfg, key)
        if section is not None:
            _validate_tuned(cfg, key, section, origins)
    _validate_teacher(cfg, origins)
    if cfg.reranker is not None:
        _positive("reranker.hits", cfg.reranker.hits, origins)
        w = cfg.reranker.fuse_weight
        if w == AUTO:
            _validate_auto_fusion(cfg, origins, kinds)
        elif w is not None and not 0.0 < w < 1.0:
            raise fail("reranker.fuse_weight", origins, f"must lie strictly between 0 (the first stage alone) and 1 "
                       f"(the re-ranker alone), got {w}; remove it for the re-ranker alone, or auto to choose it on "
                       "the dev queries (0 and 1 included)")
        if cfg.reranker.group_size < 2:
            raise fail("reranker.group_size", origins, f"needs at least 2 (one positive, one negative), "
                       f"got {cfg.reranker.group_size}")
    _positive("search.hits", cfg.search.hits, origins)
    if cfg.index.nprobe is not None:
        _positive("index.nprobe", cfg.index.nprobe, origins)
        if not IVF_FACTORY.search(cfg.index.factory):
            raise fail("index.nprobe", origins, f"applies to IVF indexes only, not factory {cfg.index.factory!r}: "
                       "remove it or use an IVF factory (e.g. IVF4096,PQ64)")
    if cfg.search.fp16_index and cfg.search.device == "cpu":
        raise fail("search.fp16_index", origins, "applies to GPU search only, and search.device is cpu")
    _float16_needs_gpu(cfg, origins)
    for key in ("encode.batch_size", "encode.max_length", "encode.chunk_size", "search.batch_size"):
        section, name = key.split(".")
        _positive(key, getattr(getattr(cfg, section), name), origins)
    validate_expect(cfg, origins)
    if cfg.eval.measures is not None:
        from peft_ir.eval import parse_measures  # noqa: PLC0415

        if not cfg.eval.measures:
            raise fail("eval.measures", origins, "name at least one measure, or remove the key for the defaults")
        try:
            parse_measures(cfg.eval.measures)
        except PeftIRError as exc:
            raise fail("eval.measures", origins, str(exc)) from None


def _validate_auto_fusion(cfg: ExperimentConfig, origins: Origins, kinds: list[str]) -> None:
    """`fuse_weight: auto` searches, re-ranks and judges the re-ranker's dev queries: they must exist, be judged
    (a BEIR training split: queries with ids, qrels over the corpus) and be searchable by the first stage."""
    s = cfg.reranker
    assert s is not None
    if s.dev_queries < 1:
        raise fail("reranker.dev_queries", origins, "reranker.fuse_weight: auto chooses the weight on the re-ranker's "
                   "dev queries, and dev_queries is 0: hold some out (e.g. 50) or give the weight by hand")
    if "run" in kinds:
        raise fail("reranker.fuse_weight", origins, "auto re-runs the first stage for the dev queries, and a given "
                   "run file covers the test queries only: use first_stage dense or bm25, or give the weight by hand")
    if not is_beir_training(cfg):
        raise fail("reranker.fuse_weight", origins, f"auto judges the dev queries held out of the training split, "
                   f"which needs a BEIR folder as training data (queries, qrels and the corpus), not "
                   f"{cfg.data.train!r}: set data.beir or data.train to one, or give the weight by hand")
    r = cfg.retriever
    if cfg.trains(r) and "dense" in kinds:
        assert r is not None
        seeds = [cfg.seed if sec.dev_seed is None else sec.dev_seed for sec in (r, s)]
        if seeds[0] != seeds[1] or r.dev_queries < s.dev_queries:
            raise fail("reranker.fuse_weight", origins, f"auto searches the re-ranker's dev queries with the trained "
                       f"retriever, so they must be queries it did not train on: the retriever holds out "
                       f"{r.dev_queries} (dev seed {seeds[0]}), the re-ranker {s.dev_queries} (dev seed {seeds[1]}); "
                       "give both the same dev seed and the retriever at least as many dev queries, or give the "
                       "weight by hand")


def _validate_data(cfg: ExperimentConfig, origins: Origins, kinds: list[str]) -> None:
    d = cfg.data
    if not d.test:
        raise fail("data", origins, "no test set: set data.beir (a BEIR folder) or data.test "
                   "(a list of {name, topics, qrels})")
    names = [t.name for t in d.test]
    for i, name in enumerate(names):
        if not SAFE_NAME.match(name):
            raise fail(f"data.test[{i}].name", origins, f"{name!r} must be a plain file-name part")
        if name in ("train", DEV_SET):
            what = "the training queries" if name == "train" else "the re-ranker's dev queries"
            raise fail(f"data.test[{i}].name", origins, f"{name!r} names the runs of {what}; choose another name")
        if names.count(name) > 1:
            raise fail(f"data.test[{i}].name", origins, f"test set name {name!r} is used twice")
    if "run" in kinds:
        for i, t in enumerate(d.test):
            if t.run is None:
                raise fail(f"data.test[{i}].run", origins, f"first stage 'run' needs a run file for test set {t.name!r}")
    if d.corpus is None and ({"dense", "bm25"} & set(kinds) or cfg.reranker is not None):
        raise fail("data.corpus", origins, "a corpus is needed for dense or BM25 search and for re-ranking "
                   "(set data.corpus or data.beir)")
    training = cfg.trains(cfg.retriever) or cfg.trains(cfg.reranker)
    if training and d.train is None:
        raise fail("data.train", origins, "a model is trained but no training data is set (data.train or data.beir)")
    uses_dev = training or (cfg.reranker is not None and cfg.reranker.fuse_weight == AUTO)
    if uses_dev and d.train is not None and is_beir_training(cfg):
        for i, t in enumerate(d.test):
            if t.split == d.train_split and Path(t.qrels).resolve() == Path(d.train).resolve():
                raise fail("data.train_split", origins, f"{d.train_split!r} is also the split of test set {t.name!r} "
                           f"(data.test[{i}]) in the same folder: training, its dev queries and a fusion weight "
                           "chosen on them would see the test queries; train on another split")
    if d.build_train_from is not None:
        if d.train is None or d.train == d.beir or is_named_source(d.train):
            raise fail("data.build_train_from", origins, "needs data.train: the training file to write")
    if d.train is not None and is_named_source(d.train):
        try:
            check_source_id(d.train)
        except PeftIRError as exc:
            raise fail("data.train", origins, str(exc)) from None


def _validate_tuned(cfg: ExperimentConfig, key: str, s: ModelSection, origins: Origins) -> None:
    from peft_ir.tuning import METHODS, TuningConfig, parse_share  # noqa: PLC0415
    from peft_ir.tuning.config import get_method  # noqa: PLC0415

    if s.zero_shot:
        for name in ("method", "budget", "negatives"):
            if getattr(s, name) is not None:
                raise fail(f"{key}.{name}", origins, "a zero-shot model is not trained: remove it or zero_shot")
        if s.tuning:
            raise fail(f"{key}.tuning", origins, "a zero-shot model is not trained: remove it or zero_shot")
        return
    if s.method is None:
        raise fail(f"{key}.method", origins, f"set a method ({', '.join(METHODS)}) or {key}.zero_shot: true")
    if s.method not in METHODS:
        close = difflib.get_close_matches(s.method, list(METHODS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise fail(f"{key}.method", origins, f"unknown method {s.method!r} (known: {', '.join(METHODS)}){hint}")
    try:
        if s.budget is not None:
            parse_share(s.budget)
            if not get_method(s.method).budget_fields:
                raise PeftIRError(f"method {s.method} has no size to choose: remove the budget")
        else:
            TuningConfig.from_dict({"method": s.method, **s.tuning})
    except PeftIRError as exc:
        raise fail(f"{key}.budget" if s.budget is not None else f"{key}.tuning", origins, str(exc)) from None
    for name in ("batch_size", "grad_accum", "eval_steps", "save_steps", "logging_steps"):
        _positive(f"{key}.{name}", getattr(s, name), origins)
    if contradiction(s.report_to):
        raise fail(f"{key}.report_to", origins, contradiction(s.report_to))
    if s.dev_queries < 0:
        raise fail(f"{key}.dev_queries", origins, f"must be 0 (no dev split: the last step is kept) or more, "
                   f"got {s.dev_queries}")
    lo, hi = s.negatives_window
    if not 1 <= lo <= hi:
        raise fail(f"{key}.negatives_window", origins, f"needs 1 <= from <= to, got [{lo}, {hi}]")
    if key == "reranker":
        _validate_cross_attention(s, origins)
    from_teacher = cfg.teacher is not None and cfg.distils(s)  # trains on the teacher's scored file
    beir_training = is_beir_training(cfg) and not from_teacher
    _validate_loss(cfg, key, s, origins, beir_training)
    if s.negatives is None:
        per_query = getattr(s, "num_negatives", 0)  # the retriever's; a reranker always needs negatives
        if beir_training and (key == "reranker" or per_query > 0):
            what = "hard negatives" if key == "reranker" else f"{per_query} hard negative(s) per query"
            raise fail(f"{key}.negatives", origins, f"training on a BEIR folder with {what} needs a source: "
                       f"bm25, {'first_stage, ' if key == 'reranker' else ''}or a TREC run of the training queries"
                       f"{'' if key == 'reranker' else ' (or num_negatives: 0 for in-batch negatives only)'}")
        return
    if not beir_training:
        what = "the teacher's scored file" if from_teacher else "a training file"
        raise fail(f"{key}.negatives", origins, f"{what} carries its own negatives: remove this key")
    if s.negatives == "first_stage":
        if key != "reranker":
            raise fail(f"{key}.negatives", origins, "first_stage negatives come from the retriever being trained: "
                       "use bm25 or a run file")
        if cfg.first_stage not in ("dense", "bm25"):
            raise fail(f"{key}.negatives", origins, "first_stage negatives need first_stage dense or bm25")


def _validate_cross_attention(s: ModelSection, origins: Origins) -> None:
    """The layout's rules (reranker/config.py) on the section's own keys; the model's family is checked with the
    input files (check_inputs)."""
    from peft_ir.reranker.config import CrossEncoderSpec  # noqa: PLC0415

    spec = CrossEncoderSpec(head=getattr(s, "head"), cross_attention=getattr(s, "cross_attention"),
                            attn_implementation=getattr(s, "attn_implementation"))
    try:
        spec.check(s.method)
    except PeftIRError as exc:
        raise fail("reranker.cross_attention", origins, str(exc)) from None


def is_named_source(train: str) -> bool:
    """Training data named by id (`hf:` through datasets, `irds:` through ir_datasets) rather than by a path."""
    return train.startswith(("hf:", "irds:"))


def check_source_id(train: str) -> None:
    """The id's syntax only (no file, package or network is looked at)."""
    from peft_ir.data.hf import is_hf, parse_hf  # noqa: PLC0415

    if is_hf(train):
        parse_hf(train)
    elif not train[len("irds:"):].strip("/ "):
        raise PeftIRError(f"{train}: expected irds:ID, e.g. irds:msmarco-passage/train/triples-small")
def _validate_loss(cfg: ExperimentConfig, key: str, s: ModelSection, origins: Origins, beir_training: bool) -> None:
    """A distillation loss needs teacher scores, which only a scored training file holds; the retriever's loss
    settings must fit together. (The loss name itself is checked against the section's choices.)"""
    from peft_ir.retriever.config import loss_problem  # noqa: PLC0415
    from peft_ir.training.losses import LOSSES  # noqa: PLC0415

    name = getattr(s, "loss")
    if key == "retriever":
        problem = loss_problem(name, getattr(s, "cache_mini_batch"), getattr(s, "num_negatives"))
        if problem:
            raise fail(f"{key}.loss", origins, problem)
    if name not in LOSSES or not LOSSES[name].needs_teacher or cfg.teacher is not None:
        return  # a teacher section supplies the scores (checked in _validate_teacher)
    if beir_training:
        raise fail(f"{key}.loss", origins, f"{name} distils teacher scores, and the BEIR folder {cfg.data.train} has "
                   "none: add a teacher section (it scores the training queries before training), or set "
                   "data.train to a scored training file (teacher scores per passage)")
    if cfg.data.build_train_from is not None:
        raise fail(f"{key}.loss", origins, f"{name} distils teacher scores, and data.build_train_from writes a "
                   "training file without them: give data.train as a scored training file")


def _validate_teacher(cfg: ExperimentConfig, origins: Origins) -> None:
    """A teacher scores the judged queries of a BEIR training split, from runs this experiment makes, for a
    section that distils them."""
    t = cfg.teacher
    if t is None:
        return
    if not (cfg.distils(cfg.retriever) or cfg.distils(cfg.reranker)):
        raise fail("teacher", origins, "no section distils its scores: give retriever.loss or reranker.loss a "
                   "distillation loss (kl, margin-mse), or remove the section")
    fusion = cfg.teacher_fusion()
    if not is_beir_training(cfg):
        if fusion is not None or t.candidates != "file":
            raise fail("teacher.candidates" if fusion is None else "teacher.teacher", origins,
                       f"the training data is a file ({cfg.data.train!r}), whose queries the experiment makes no runs "
                       "of: a model teacher scores its own passages (candidates: file); a fusion teacher or run "
                       "candidates need a BEIR folder as training data (queries, qrels and the corpus)")
        if is_named_source(cfg.data.train or ""):
            raise fail("teacher", origins, f"a teacher scores a training file on disk, not the named source "
                       f"{cfg.data.train!r}: export it to a file first")
    elif t.candidates == "file":
        raise fail("teacher.candidates", origins, f"file scores a training file's own passages, and the training "
                   f"data is the BEIR folder {cfg.data.train!r}: choose dense, bm25 or fused candidates")
    if fusion is not None:
        for kind in fusion:
            if kind not in TEACHER_RUNS:
                close = difflib.get_close_matches(kind, TEACHER_RUNS, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise fail("teacher.teacher", origins, f"unknown run kind {kind!r} in {t.teacher!r}: a fusion teacher "
                           f"fuses runs of the training queries that the experiment makes, dense (the retriever's "
                           f"untrained start model) or bm25{hint}")
        if len(fusion) < 2 or len(set(fusion)) != len(fusion):
            raise fail("teacher.teacher", origins, f"a fusion teacher needs two or more different run kinds, "
                       f"{FUSION_PREFIX}dense,bm25; got {t.teacher!r}")
        if t.teacher_weights is not None and len(t.teacher_weights) != len(fusion):
            raise fail("teacher.teacher_weights", origins, f"needs one weight per run ({len(fusion)}), got "
                       f"{t.teacher_weights}")
        for name, default in (("teacher_kind", "auto"), ("teacher_dtype", "float32")):
            if getattr(t, name) != default:
                raise fail(f"teacher.{name}", origins, "applies to a model teacher, not to a fusion of runs")
    else:
        if t.candidates == "fused":
            raise fail("teacher.candidates", origins, "fused is a fusion teacher's own ranking, and this teacher is "
                       "a model: choose dense (the retriever's untrained start model) or bm25")
        if t.teacher_weights is not None:
            raise fail("teacher.teacher_weights", origins, "weighs the runs of a fusion teacher; this teacher is a "
                       "model: remove it")
    if "dense" in cfg.teacher_run_kinds() and cfg.retriever is None:
        raise fail("teacher.teacher" if "dense" in (fusion or []) else "teacher.candidates", origins,
                   "dense is the run of the retriever's untrained start model, and there is no retriever section "
                   f"(first_stage is {cfg.first_stage}): use bm25, a dense first stage, or add retriever: "
                   "{zero_shot: true} (the model the teacher's dense run encodes with)")
    if not 0 < t.teacher_scale < float("inf"):
        raise fail("teacher.teacher_scale", origins, f"must be a positive number, got {t.teacher_scale}")
    _positive("teacher.depth", t.depth, origins)
    if t.hits < t.depth:
        raise fail("teacher.hits", origins, f"the candidates are each run's top depth ({t.depth}) hits: hits must be "
                   f"at least that, got {t.hits}")
    _positive("teacher.teacher_batch_size", t.teacher_batch_size, origins)
    for name in ("teacher_query_max_length", "teacher_passage_max_length"):
        if getattr(t, name) is not None:
            _positive(f"teacher.{name}", getattr(t, name), origins)


def is_beir_training(cfg: ExperimentConfig) -> bool:
    """Whether the training data is a BEIR folder (queries, qrels split, corpus) rather than a training file."""
    train = cfg.data.train
    return train is not None and (train == cfg.data.beir or Path(train).is_dir())


def _float16_needs_gpu(cfg: ExperimentConfig, origins: Origins) -> None:
    """encode.dtype / reranker.rerank_dtype / teacher.teacher_dtype float16 without a GPU: refused now, not when the
    model is loaded."""
    wanted = [("encode.dtype", cfg.encode.dtype)]
    if cfg.reranker is not None:
        wanted.append(("reranker.rerank_dtype", cfg.reranker.rerank_dtype))
    if cfg.teacher is not None:
        wanted.append(("teacher.teacher_dtype", cfg.teacher.teacher_dtype))
    for key, dtype in wanted:
        if dtype == "float16":
            import torch  # noqa: PLC0415

            if not torch.cuda.is_available():
                raise fail(key, origins, "float16 needs a GPU, and torch sees none; on the CPU use bfloat16")


def _positive(key: str, value: int, origins: Origins) -> None:
    if value < 1:
        raise fail(key, origins, f"must be at least 1, got {value}")


# -- inputs on disk -------------------------------------------------------------------------------------------------
def check_inputs(cfg: ExperimentConfig, origins: Origins, notes: list[str] | None = None) -> None:
    """Every input file, folder and model exists, and every budget is reachable on its model.

    Training data named by id and Hub models are fetched at run time: with `notes` (what `peft-ir run --check`
    passes) one that this machine cannot read now is a note appended there, not a failure (a model's budget is then
    left unchecked); without, i.e. before a run, it is refused now (offline and not cached, no ir_datasets, ...).
    """
    from peft_ir.data import BeirDataset  # noqa: PLC0415
    from peft_ir.data.examples import require_training_source, training_source_note  # noqa: PLC0415
    from peft_ir.experiment.tuning import has_task_head, resolve_tuning  # noqa: PLC0415
    from peft_ir.tuning.structure import model_structure  # noqa: PLC0415

    d = cfg.data

    def exists(key: str, path: str | None, split: str | None = None) -> None:
        if path is None or path.startswith("irds:"):
            return
        p = Path(path)
        if not p.exists():
            raise fail(key, origins, f"{path} not found (relative paths are resolved against the working directory)")
        if p.is_dir() and split is not None:
            try:
                BeirDataset(p, split)
            except PeftIRError as exc:
                raise fail(key, origins, str(exc)) from None

    if d.beir is not None:
        exists("data.beir", d.beir, d.test_split)
    if d.build_train_from is not None:
        exists("data.build_train_from", d.build_train_from)
    elif d.train is not None and is_named_source(d.train):
        try:
            note = training_source_note(d.train)  # refuses a malformed id or a missing local folder
            if notes is not None and note:
                notes.append(f"data.train: {note}")
            elif notes is None and (cfg.trains(cfg.retriever) or cfg.trains(cfg.reranker)):
                require_training_source(d.train, fetch=False)
        except PeftIRError as exc:
            raise fail("data.train", origins, str(exc)) from None
    elif d.train is not None:
        exists("data.train", d.train, d.train_split)
    exists("data.corpus", d.corpus)
    for i, t in enumerate(d.test):
        exists(f"data.test[{i}].topics", t.topics, t.split)
        exists(f"data.test[{i}].qrels", t.qrels, t.split)
        exists(f"data.test[{i}].run", t.run)
    if cfg.search.device == "cuda" and "dense" in cfg.run_kinds():
        from peft_ir.indexing.dense import visible_gpus  # noqa: PLC0415

        if not any(visible_gpus()):  # said now rather than after training
            raise fail("search.device", origins, "cuda asked for, but neither faiss-gpu nor torch sees a GPU "
                       "(auto searches on whatever is there)")
    for key in ("retriever", "reranker"):
        section: ModelSection | None = getattr(cfg, key)
        if section is None:
            continue
        if cfg.trains(section) and missing_package(section.report_to):
            raise fail(f"{key}.report_to", origins, missing_package(section.report_to))
        if section.negatives not in (None, *NEGATIVE_SOURCES):
            exists(f"{key}.negatives", section.negatives)
        if cfg.trains(section) and d.train is not None and d.build_train_from is None and cfg.teacher is None:
            from peft_ir.training.losses import LOSSES, refuse_without_teacher  # noqa: PLC0415

            name = getattr(section, "loss")
            if name in LOSSES and LOSSES[name].needs_teacher:
                try:
                    refuse_without_teacher(name, d.train)
                except PeftIRError as exc:
                    raise fail(f"{key}.loss", origins, str(exc)) from None
        try:
            structure = model_structure(section.model, has_task_head(section))
            if getattr(section, "cross_attention", None) == "gated":
                from peft_ir.reranker.gated import check_supported  # noqa: PLC0415

                check_supported(structure.config)
        except PeftIRError as exc:
            if notes is None or _is_local(section.model):
                raise fail(f"{key}.model", origins, str(exc)) from None
            notes.append(f"{key}.model: {section.model!r} is not at hand here (not a local folder nor in the "
                         f"Hugging Face cache): it is fetched from the Hub at run time, and its "
                         f"{'budget' if section.budget else 'method'} is checked then")
            continue
        try:
            resolve_tuning(section, cfg.seed)
        except PeftIRError as exc:
            raise fail(f"{key}.budget" if section.budget else f"{key}.method", origins, str(exc)) from None
    if cfg.teacher is not None and cfg.teacher_fusion() is None:  # a model teacher: its folder read, nothing loaded
        from peft_ir.settings import from_flat, to_flat  # noqa: PLC0415
        from peft_ir.teacher.config import TeacherConfig  # noqa: PLC0415
        from peft_ir.teacher.teachers import resolve_teacher  # noqa: PLC0415

        try:
            resolve_teacher(from_flat(TeacherConfig, to_flat(cfg.teacher)))
        except PeftIRError as exc:
            if notes is None or _is_local(cfg.teacher.teacher):
                raise fail("teacher.teacher", origins, str(exc)) from None
            notes.append(f"teacher.teacher: {cfg.teacher.teacher!r} is not at hand here (not a local folder nor in "
                         "the Hugging Face cache): it is fetched from the Hub at run time")


def _is_local(model: str | None) -> bool:
    """A model named by a path (or the embedded default), as opposed to a Hub name fetched at run time."""
    from peft_ir.models import hub_shaped, resolve_model  # noqa: PLC0415

    name = resolve_model(model)
    return Path(name).exists() or name.startswith(("/", "./", "../", "~")) or not hub_shaped(name)
