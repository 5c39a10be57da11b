"""What a teacher is (TeacherConfig) and what `peft-ir annotate` and `peft-ir mine --teacher` do with it: settings
defined once, free of torch so that the flags are built without loading a model library."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from peft_ir.precision import ComputeDtype
from peft_ir.settings import setting

TeacherKind = Literal["auto", "cross-encoder", "bi-encoder"]
FUSION_PREFIX = "fusion:"
# Mining's margin when a teacher is given and --margin is not: 0 drops exactly the candidates the teacher scores
# above the (weakest) positive. It is the only value that means the same on every teacher's scale (cross-encoder
# logits, bi-encoder dot products, fused scores in [0, 1]); a wider margin must be chosen for the teacher at hand.
DEFAULT_MARGIN = 0.0


def fusion_runs(spec: str | None) -> list[str] | None:
    """The runs a `fusion:RUN1,RUN2[,...]` teacher names (as written, stripped, unchecked); None for any other
    teacher. One reading of the spec, shared by `annotate`'s teacher and the experiment's teacher section."""
    if not spec or not str(spec).startswith(FUSION_PREFIX):
        return None
    return [r.strip() for r in str(spec)[len(FUSION_PREFIX):].split(",")]


@dataclass
class TeacherConfig:
    """The model (or runs) whose scores supervise training: see teacher/teachers.py for how each kind is read."""

    teacher: str | None = setting(None, help="a re-ranker or retriever training output (cross_encoder.json or "
                                             "encoder.json beside adapter/), a plain model folder or cached hub name "
                                             "(a classification head: cross-encoder; else bi-encoder), or "
                                             "fusion:RUN1,RUN2[,...]: min-max interpolation of TREC runs")
    teacher_kind: TeacherKind = setting("auto", help="auto: read from the folder (see --teacher); force "
                                                     "cross-encoder or bi-encoder for a plain model folder")
    teacher_weights: list[float] | None = setting(None, help="fusion teacher: one weight per run (default: 1/n each)")
    teacher_query_max_length: int | None = setting(None, help="query tokens the teacher keeps (default: as its "
                                                              "training output records, else the model's default)")
    teacher_passage_max_length: int | None = setting(None, help="passage tokens the teacher keeps (default: as "
                                                                "its training output records, else the model's "
                                                                "default)")
    teacher_dtype: ComputeDtype = setting("float32", help="precision a model teacher scores in: bfloat16 (on the CPU "
                                                         "under autocast: about 2x faster where the CPU computes it "
                                                         "natively, README 'bfloat16 on the CPU') or float16 (GPU "
                                                         "only); recorded with the teacher")
    teacher_batch_size: int = setting(32, help="pairs (cross-encoder) or texts (bi-encoder) scored per batch")
    teacher_scale: float = setting(1.0, help="multiply every teacher score by this (recorded): e.g. 20 puts a cosine "
                                             "bi-encoder on the 20 x cosine scale of the cosine re-ranking head and of "
                                             "models trained with MultipleNegativesRankingLoss, so that kl and "
                                             "margin-mse compare the student's scores with the teacher's like for "
                                             "like; mining's --margin is in scaled units")

    @property
    def is_fusion(self) -> bool:
        return fusion_runs(self.teacher) is not None


@dataclass(kw_only=True)
class AnnotateConfig:
    """`peft-ir annotate`: teacher scores for each training query's positives and first-stage candidates."""

    dataset: str | None = setting(None, help="BEIR folder: the split's judged queries, their qrels and the corpus")
    split: str = setting("train", help="qrels split of --dataset")
    train: str | None = setting(None, help="instead of --dataset: a training file (any shape peft-ir reads) whose "
                                           "own positives and negatives are scored")
    run: str | None = setting(None, help="first-stage TREC run over the split's queries (BM25, dense or fused): its "
                                         "top --depth hits are the candidates (needed with --dataset)")
    depth: int = setting(30, help="candidates per query: the run's top DEPTH hits (positives are always scored)")
    output: str = setting(help="scored training file to write (jsonl; the teacher is recorded in "
                               "OUTPUT.teacher.json)")
    scorer: TeacherConfig = setting(default_factory=TeacherConfig, expand=True, help="the teacher")
    progress: bool = setting(True, help="progress bar over queries")


@dataclass(kw_only=True)
class TeacherMiningConfig(TeacherConfig):
    """`peft-ir mine --teacher`: the teacher-margin filter (sentence-transformers' mine_hard_negatives semantics)."""

    margin: float | None = setting(None, help=f"drop a candidate whose teacher score > (lowest positive score - "
                                              f"MARGIN); needs --teacher (default with a teacher: "
                                              f"{DEFAULT_MARGIN:g}, i.e. drop what the teacher ranks above a "
                                              f"positive)")
    teacher_scores: str | None = setting(None, help="where the teacher's scores of the rank window go: a scored "
                                                    "training file, resumable and reusable for distillation "
                                                    "(default: OUTPUT with .scored.jsonl)")
