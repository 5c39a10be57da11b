"""The experiment config schema: one YAML file describes one reproducible experiment, end to end.

Sections mirror the library's own configs (RetrieverTrainConfig, RerankerTrainConfig, EncoderSpec,
CrossEncoderSpec) field for field and with the same defaults, so a YAML key means exactly what the matching
`peft-ir train` flag means; tests/experiment checks that the defaults stay in step.
Relative paths are resolved against the working directory of `peft-ir run` (the repository root for the
committed configs) and stored absolute in the run folder's `config.resolved.yaml`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

RunKind = Literal["dense", "bm25", "run"]   # a first-stage run: dense search, BM25, or a given run file
NEGATIVE_SOURCES = ("bm25", "first_stage")  # besides a path to a TREC run of the training queries


@dataclass(frozen=True, kw_only=True)
class TestSet:
    """Queries to evaluate on: topics and qrels (files, a BEIR folder with `split`, or irds: ids)."""

    name: str
    topics: str
    qrels: str
    split: str = "test"
    run: str | None = None                  # a given first-stage run (first_stage: run, or fuse.runs: [.., run])


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where training and test data come from; `beir` is shorthand that fills train, corpus and test."""

    beir: str | None = None                 # BEIR folder: train = its train_split, one test set = its test_split
    train_split: str = "train"
    test_split: str = "test"
    train: str | None = None                # BEIR folder or training file (Tevatron / FlagEmbedding / triples)
    build_train_from: str | None = None     # train-positives.jsonl: write `train` with BM25 negatives if missing
    corpus: str | None = None               # BEIR folder or corpus.jsonl, collection.tsv, irds:ID
    test: list[TestSet] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class ScheduleSection:
    """Training schedule shared by retriever and reranker (peft_ir.training.args.ScheduleConfig)."""

    batch_size: int = 16
    grad_accum: int = 1
    epochs: float = 1.0
    max_steps: int = -1
    lr: float | None = None                 # None: 2e-5 for full, 1e-3 for bitfit and the PEFT methods
    warmup_ratio: float = 0.1
    dev_queries: int = 50
    dev_seed: int | None = None             # dev queries and negative pools (ScheduleConfig.dev_seed); None: seed
    eval_steps: int = 50
    save_steps: int = 50
    logging_steps: int = 10


@dataclass(frozen=True, kw_only=True)
class ModelSection:
    """A model that is trained with a PEFT method (or used as it is, `zero_shot: true`)."""

    model: str | None = None                # None: the embedded all-MiniLM-L6-v2
    zero_shot: bool = False
    method: str | None = None               # a name in peft_ir.tuning.METHODS
    budget: str | float | None = None       # "0.5%" or 0.005: the method's sizes are chosen to reach this share
    tuning: dict[str, Any] = field(default_factory=dict)   # explicit sizes: r, ar, lora_r, prefix_len, ...
    negatives: str | None = None            # bm25 | first_stage | a TREC run of the training queries
    negatives_window: tuple[int, int] = (1, 100)


@dataclass(frozen=True, kw_only=True)
class TunedModelSection(ScheduleSection, ModelSection):
    """Model fields first, then the schedule (dataclass fields follow the reversed MRO)."""


@dataclass(frozen=True, kw_only=True)
class RetrieverSection(TunedModelSection):
    pooling: Literal["mean", "cls"] | None = None
    normalize: bool | None = None
    query_prefix: str = ""
    passage_prefix: str = ""
    query_max_length: int | None = None     # None: the model's own max_seq_length (256 for MiniLM)
    passage_max_length: int = 256          # in training; encoding uses encode.max_length
    num_negatives: int = 1
    temperature: float = 0.05
    cache_mini_batch: int | None = None
    dev_corpus: int = 2000


@dataclass(frozen=True, kw_only=True)
class RerankerSection(TunedModelSection):
    batch_size: int = 8
    query_max_length: int = 32
    passage_max_length: int = 192
    loss: Literal["lce", "bce"] = "lce"
    group_size: int = 8
    negatives_pool: int = 32
    max_queries: int | None = None
    dev_candidates: int = 30
    eval_batch_size: int = 64
    head_lr: float | None = None            # None: lr for PEFT methods, 1e-3 under full (RerankerTrainConfig.head_lr)
    hits: int = 100                         # re-rank this many top hits of each query
    keep_rest: bool = True                  # deeper first-stage hits follow in their order (R@100 stays comparable)
    rerank_batch_size: int = 32


@dataclass(frozen=True, kw_only=True)
class EncodeSection:
    batch_size: int = 64
    max_length: int = 256                   # passage tokens when encoding the corpus
    chunk_size: int = 4096


@dataclass(frozen=True, kw_only=True)
class IndexSection:
    factory: str = "Flat"
    train_sample: int = 200_000
    nprobe: int | None = None               # IVF lists probed per query; None: 32 (at most nlist). IVF only


@dataclass(frozen=True, kw_only=True)
class SearchSection:
    hits: int = 1000
    batch_size: int = 64
    device: Literal["auto", "cpu", "cuda"] = "auto"   # dense search, as `peft-ir search --device`
    fp16_index: bool = False                # GPU search: float16 Flat storage / IVF-PQ tables (--fp16-index)


@dataclass(frozen=True, kw_only=True)
class BM25Section:
    k1: float = 0.9
    b: float = 0.4
    threads: int | None = None              # None: one per core, at most 8


@dataclass(frozen=True, kw_only=True)
class FuseSection:
    runs: list[RunKind] = field(default_factory=lambda: ["dense", "bm25"])
    method: Literal["rrf", "interpolate"] = "rrf"
    k: float = 60.0
    norm: Literal["minmax", "zscore"] = "minmax"
    weights: list[float] | None = None
    hits: int = 1000


@dataclass(frozen=True, kw_only=True)
class EvalSection:
    measures: list[str] | None = None       # ir-measures names; None: the collection's default set
    preset: Literal["beir", "trec-dl", "msmarco"] | None = None
    ignore_self: bool = False


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    name: str
    data: DataConfig
    seed: int = 42                          # training order, new head, added modules' init; dev split unless dev_seed
    output: str = "runs"                    # the run folder is <output>/<name>
    description: str = ""
    first_stage: RunKind = "dense"
    retriever: RetrieverSection | None = None
    encode: EncodeSection = field(default_factory=EncodeSection)
    index: IndexSection = field(default_factory=IndexSection)
    search: SearchSection = field(default_factory=SearchSection)
    bm25: BM25Section = field(default_factory=BM25Section)
    fuse: FuseSection | None = None
    reranker: RerankerSection | None = None
    eval: EvalSection = field(default_factory=EvalSection)

    def run_kinds(self) -> list[str]:
        """The first-stage runs this experiment produces, first stage first."""
        kinds = [self.first_stage]
        for kind in self.fuse.runs if self.fuse else []:
            if kind not in kinds:
                kinds.append(kind)
        return kinds

    def trains(self, section: TunedModelSection | None) -> bool:
        return section is not None and not section.zero_shot
