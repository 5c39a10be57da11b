"""`peft-ir mine --teacher`: hard negatives from a rank window, minus those the teacher scores within a margin of
(or above) the query's weakest positive.

The teacher's scores come from `annotate` over the run's top TO hits (TO the window's end), so they are written
resumably with the teacher recorded, and the scored file left beside the mined one serves distillation too; a
second `mine` with the same teacher and run reuses it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from peft_ir.data import BeirDataset, load_corpus, read_run
from peft_ir.data.examples import MiningStats, beir_examples, mine_negatives
from peft_ir.data.training import TrainingExample
from peft_ir.errors import PeftIRError
from peft_ir.teacher.annotate import AnnotateStats, annotate, scores_by_query
from peft_ir.teacher.config import DEFAULT_MARGIN, AnnotateConfig, TeacherConfig, TeacherMiningConfig
from peft_ir.teacher.teachers import resolve_teacher


@dataclass
class MinedWithTeacher:
    examples: list[TrainingExample]
    stats: MiningStats
    annotation: AnnotateStats
    scores_path: Path
    margin: float


def default_scores_path(output: str | Path) -> Path:
    out = Path(output)
    return out.with_name(out.name.removesuffix(out.suffix) + ".scored.jsonl")


def mine_with_teacher(dataset: str | Path, split: str, run: str | Path, window: tuple[int, int], num: int, seed: int,
                      cfg: TeacherMiningConfig, output: str | Path, *, device: str = "cpu",
                      progress: bool = True) -> MinedWithTeacher:
    """Score the window with the teacher (annotate), then mine with the margin filter (data.examples)."""
    depth_from, depth_to = window
    if not 1 <= depth_from <= depth_to:
        raise PeftIRError(f"rank window must satisfy 1 <= from <= to, got [{depth_from}, {depth_to}]")
    margin = DEFAULT_MARGIN if cfg.margin is None else cfg.margin
    if not math.isfinite(margin):
        raise PeftIRError(f"--margin must be a finite number, got {margin}")
    resolve_teacher(cfg)  # a bad teacher fails before annotate reads the corpus
    scores_path = Path(cfg.teacher_scores) if cfg.teacher_scores else default_scores_path(output)
    if scores_path.resolve() == Path(output).resolve():
        raise PeftIRError(f"--teacher-scores and --output are both {output}: give the teacher's scores their own file")
    teacher = TeacherConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(TeacherConfig)})
    annotation = annotate(AnnotateConfig(dataset=str(dataset), split=split, run=str(run), depth=depth_to,
                                         output=str(scores_path), scorer=teacher, progress=progress), device)
    ds = BeirDataset(Path(dataset), split)
    stats = MiningStats()
    negatives = mine_negatives(read_run(run), ds.qrels(), depth_from=depth_from, depth_to=depth_to, num=num,
                               seed=seed, scores=scores_by_query(scores_path), margin=margin, stats=stats)
    examples = beir_examples(ds, load_corpus(ds.corpus_path), negatives)
    return MinedWithTeacher(examples, stats, annotation, scores_path, margin)
