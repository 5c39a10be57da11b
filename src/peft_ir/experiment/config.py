"""The experiment config schema: one YAML file describes one reproducible experiment, end to end.

The retriever and reranker sections are built from the library's own configs (RetrieverTrainConfig with its
EncoderSpec, RerankerTrainConfig with its CrossEncoderSpec): a YAML key is the field behind the matching
`peft-ir train` flag, with its default and help text.
Relative paths are resolved against the working directory of `peft-ir run` (the repository root for the
committed configs) and stored absolute in the run folder's `config.resolved.yaml`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from peft_ir.indexing.config import BM25Config, FusionConfig, IndexConfig, SearchConfig
from peft_ir.precision import ComputeDtype
from peft_ir.reranker.config import RerankerTrainConfig
from peft_ir.retriever.config import EncodeConfig, EncoderSpec, RetrieverTrainConfig
from peft_ir.settings import default_of, flat_dataclass, setting
from peft_ir.teacher.config import AnnotateConfig, fusion_runs

RunKind = Literal["dense", "bm25", "run"]   # a first-stage run: dense search, BM25, or a given run file
RERANKED = "reranked"                       # the run kind of the re-ranker's own ranking
RERANKED_FUSED = "reranked-fused"           # the run kind of a re-ranker fused with its first stage (fuse_weight)
AUTO = "auto"                               # reranker.fuse_weight chosen on the dev queries
DEV_SET = "rerank-dev"                      # names the runs of the re-ranker's dev queries (fuse_weight: auto)
NEGATIVE_SOURCES = ("bm25", "first_stage")  # besides a path to a TREC run of the training queries
TEACHER_RUNS = ("dense", "bm25")            # the teacher's runs of the training queries (dense: the start model)


@dataclass(frozen=True, kw_only=True)
class TestSet:
    """Queries to evaluate on: topics and qrels (files, a BEIR folder with `split`, or irds: ids)."""

    name: str = setting(help="names the test set's runs and its rows in metrics.json")
    topics: str = setting(help="topics tsv, queries.jsonl, a BEIR folder (with split) or irds:ID")
    qrels: str = setting(help="TREC qrels, a BEIR folder (with split) or irds:ID")
    split: str = setting("test", help="split of a BEIR folder")
    run: str | None = setting(None, help="a given first-stage run (first_stage: run, or fuse.runs: [.., run])")


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where training and test data come from; `beir` is shorthand that fills train, corpus and test."""

    beir: str | None = setting(None, help="BEIR folder: train = its train_split, one test set = its test_split")
    train_split: str = setting("train", help="qrels split the models train on")
    test_split: str = setting("test", help="qrels split of the BEIR test set")
    train: str | None = setting(None, help="BEIR folder, training file (Tevatron / FlagEmbedding / triples / scored), "
                                           "hf:DATASET[:SPLIT] or irds:ID (training triples)")
    build_train_from: str | None = setting(None, help="train-positives.jsonl: write `train` with BM25 negatives if "
                                                      "missing")
    corpus: str | None = setting(None, help="BEIR folder or corpus.jsonl, collection.tsv, irds:ID")
    test: list[TestSet] = setting(default_factory=list, help="test sets: {name, topics, qrels, split, run}")


@dataclass(frozen=True, kw_only=True)
class ModelSection:
    """How a section's model is trained, as only an experiment says it (the library takes a TuningConfig and a
    negatives run); the section's other keys are the library's own settings (see below)."""

    zero_shot: bool = setting(False, help="use the model as it is, untrained")
    method: str | None = setting(None, help="a PEFT method: full, bitfit, adapter, parallel, prefix, lora, mam, "
                                            "iaa-s, iaa-l, iaa-m")
    budget: str | float | None = setting(None, help='target share of trainable parameters ("0.5%" or 0.005): the '
                                                    "method's sizes are chosen to reach it")
    tuning: dict[str, Any] = setting(default_factory=dict, help="explicit method sizes: r, ar, lora_r, prefix_len, ..")
    negatives: str | None = setting(None, help="hard negatives: bm25 | first_stage | a TREC run of the training "
                                               "queries")


@dataclass(frozen=True, kw_only=True)
class RerankStage:
    """The re-ranking stage that follows a re-ranker's training."""

    hits: int = setting(100, help="re-rank this many top hits of each query")
    keep_rest: bool = setting(True, help="deeper first-stage hits follow in their order (R@100 stays comparable)")
    rerank_batch_size: int = setting(32, help="pairs scored per batch when re-ranking")
    rerank_dtype: ComputeDtype = setting("float32", help="compute precision of re-ranking (peft_ir.precision; as "
                                                         "encode.dtype); training's is bf16 / fp16")
    fuse_weight: float | Literal["auto"] | None = setting(
        None, help="also fuse the re-ranker with its first stage: weight of its min-max normalised score against the "
                   "first stage's (0 < w < 1), or auto: chosen on the re-ranker's dev queries from 0, 0.1, .., 1 "
                   "(0: the first stage alone); the run reranked-fused is then the final one")


# What the experiment supplies itself: data paths, the run folder, the tuning config, its one seed, resuming.
SUPPLIED = ("train", "output", "split", "negatives_run", "tuning", "seed", "resume", "progress", "adapter", "extra",
            "head_seed")

# The sections are the library's training configs, flattened (peft_ir.settings): one definition per setting.
RetrieverSection = flat_dataclass("RetrieverSection", RetrieverTrainConfig, base=ModelSection, skip=SUPPLIED,
                                  module=__name__)
RerankerSection = flat_dataclass("RerankerSection", RerankerTrainConfig, RerankStage, base=ModelSection,
                                 skip=SUPPLIED, module=__name__)


@dataclass(frozen=True, kw_only=True)
class EncodeLength:
    max_length: int = setting(default_of(EncoderSpec, "passage_max_length"),
                              help="passage tokens kept when encoding the corpus")


@dataclass(frozen=True, kw_only=True)
class FuseRuns:
    runs: list[RunKind] = setting(default_factory=lambda: ["dense", "bm25"], help="first-stage runs to fuse")


EncodeSection = flat_dataclass("EncodeSection", EncodeConfig, base=EncodeLength, module=__name__)
IndexSection = flat_dataclass("IndexSection", IndexConfig, module=__name__)
SearchSection = flat_dataclass("SearchSection", SearchConfig, module=__name__)
BM25Section = flat_dataclass("BM25Section", BM25Config, module=__name__)
FuseSection = flat_dataclass("FuseSection", FusionConfig, base=FuseRuns, module=__name__)


@dataclass(frozen=True, kw_only=True)
class TeacherRuns:
    """What only an experiment says about its teacher: what it is in terms of the runs the experiment makes, where
    each training query's candidates come from and how deep those runs go; the rest are `peft-ir annotate`'s own."""

    teacher: str = setting(help="fusion:KIND1,KIND2: min-max interpolation of runs of the training queries, KIND "
                                "dense (the retriever's untrained start model) or bm25; or a re-ranker or retriever "
                                "training output, a model folder or cached hub name (as peft-ir annotate --teacher)")
    candidates: Literal["dense", "bm25", "fused", "file"] = setting(
        "fused", help="the run of the training queries whose top depth hits are scored besides the positives: dense "
                      "(the start model), bm25, or fused (a fusion teacher's own ranking); or file: the training "
                      "file's own positives and negatives (a model teacher of training data given as a file)")
    hits: int = setting(100, help="hits of each run of the training queries (at least depth; a fusion teacher "
                                  "normalises each run over them)")


# The teacher is annotate's, flattened: its TeacherConfig fields and depth; inputs and output the experiment supplies.
TeacherSection = flat_dataclass("TeacherSection", AnnotateConfig, base=TeacherRuns,
                                skip=("dataset", "split", "train", "run", "output", "progress"), module=__name__)


@dataclass(frozen=True, kw_only=True)
class EvalSection:
    measures: list[str] | None = setting(None, help="ir-measures names; None: the collection's default set")
    preset: Literal["beir", "trec-dl", "msmarco"] | None = setting(None, help="a collection's measure set; None: "
                                                                              "chosen by the collection")
    ignore_self: bool = setting(False, help="drop a document retrieved for the query of the same id (ArguAna)")


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    name: str = setting(help="the run folder's name (default: the config file's stem)")
    data: DataConfig = setting(help="training, corpus and test data")
    seed: int = setting(42, help="training order, new head, added modules' init; dev split unless dev_seed")
    output: str = setting("runs", help="the run folder is <output>/<name>")
    description: str = setting("", help="free text, shown in reports")
    first_stage: RunKind = setting("dense", help="the run that is re-ranked (or fused): dense, bm25 or a given run")
    precision: Literal["float32", "bfloat16", "auto"] | None = setting(
        None, help="the compute precision of every model stage at once (retriever.bf16, encode.dtype, reranker.bf16, "
                   "reranker.rerank_dtype, a model teacher's teacher.teacher_dtype); auto: bfloat16 on a CPU that "
                   "computes it natively (AVX512-BF16 or AMX) and no GPU, float32 elsewhere; null: each section's own")
    teacher: TeacherSection | None = setting(None, help="score the training queries' candidates with a teacher "
                                                        "before training: a section whose loss distils (kl, "
                                                        "margin-mse) trains on that scored file")
    retriever: RetrieverSection | None = setting(None, help="the bi-encoder: trained, or zero_shot")
    encode: EncodeSection = setting(default_factory=EncodeSection, help="corpus encoding")
    index: IndexSection = setting(default_factory=IndexSection, help="the FAISS index")
    search: SearchSection = setting(default_factory=SearchSection, help="first-stage search")
    bm25: BM25Section = setting(default_factory=BM25Section, help="BM25 (Pyserini)")
    fuse: FuseSection | None = setting(None, help="fuse first-stage runs")
    reranker: RerankerSection | None = setting(None, help="the cross-encoder: trained, or zero_shot; re-ranks the "
                                                          "first stage")
    eval: EvalSection = setting(default_factory=EvalSection, help="measures")
    expect: dict[str, dict[str, dict[str, float]]] = setting(
        default_factory=dict, help="results this config must reproduce: {TEST_SET: {RUN_KIND: {MEASURE: VALUE}}}, "
                                   "checked after evaluation (experiment/expect.py); null: none (drops an extended "
                                   "config's block); a --set of anything but name, output or description drops it too")
    expect_tolerance: float = setting(1e-4, help="largest difference from an expected value that still passes")

    def run_kinds(self) -> list[str]:
        """The first-stage runs this experiment produces, first stage first."""
        kinds = [self.first_stage]
        for kind in self.fuse.runs if self.fuse else []:
            if kind not in kinds:
                kinds.append(kind)
        return kinds

    def trains(self, section: ModelSection | None) -> bool:
        return section is not None and not section.zero_shot

    def distils(self, section: ModelSection | None) -> bool:
        """Whether a section trains with a loss that reads teacher scores."""
        from peft_ir.training.losses import LOSSES  # noqa: PLC0415

        loss = LOSSES.get(getattr(section, "loss", ""))
        return self.trains(section) and loss is not None and loss.needs_teacher

    def teacher_fusion(self) -> list[str] | None:
        """The run kinds a fusion teacher fuses (as written, unchecked); None for a model teacher or none."""
        return None if self.teacher is None else fusion_runs(self.teacher.teacher)

    def teacher_run_kinds(self) -> list[str]:
        """The runs of the training queries the teacher needs: its fusion's and its candidates' (fused and file
        excluded)."""
        if self.teacher is None:
            return []
        kinds = list(self.teacher_fusion() or [])
        if self.teacher.candidates in TEACHER_RUNS and self.teacher.candidates not in kinds:
            kinds.append(self.teacher.candidates)
        return kinds
