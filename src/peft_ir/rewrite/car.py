"""CAR: context-aware query rewriting of *training* queries (Anand et al. 2023, "Context Aware Query Rewriting
for Text Rankers using LLM").

Each training query is rewritten by an LLM prompted with the query and one of its relevant passages as context,
so that the rewrite states the intent that the passage answers (no concept drift: the context is a judged
passage). A ranker is then trained on the rewritten queries; no LLM is needed at query time. The new training
file keeps positives and negatives as they were and replaces the query (or, with `keep_original`, holds both the
original and the rewritten example). It is written only when every rewrite succeeded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from peft_ir.data.training import Shape, TrainingExample, detect_shape, read_training, write_training
from peft_ir.errors import PeftIRError
from peft_ir.rewrite.cache import RewriteCache
from peft_ir.rewrite.llm import LLMBackend, generate_all

log = logging.getLogger(__name__)

CAR_PROMPT = (
    "A search query and a passage that is relevant to it are given. The query may be short, ambiguous or "
    "underspecified. Rewrite the query into one clear, specific, well-formed search query that expresses the "
    "information need that the passage satisfies. Keep the intent of the original query; do not answer it. "
    "Reply with the rewritten query only.\n\n"
    "Passage: {passage}\n\n"
    "Query: {query}\n\n"
    "Rewritten query:"
)


def car_prompt(query: str, passage: str, template: str = CAR_PROMPT, max_passage_chars: int = 2000) -> str:
    passage = " ".join(passage.split())
    if len(passage) > max_passage_chars:
        passage = passage[:max_passage_chars].rsplit(" ", 1)[0] + " ..."
    return template.replace("{passage}", passage).replace("{query}", " ".join(query.split()))


def clean_rewrite(text: str) -> str:
    """First non-empty line of a generation, without a 'Rewritten query:' style prefix or wrapping quotes."""
    for line in text.strip().splitlines():
        line = line.strip()
        if not line:
            continue
        for prefix in ("rewritten query:", "query:", "rewrite:"):
            if line.lower().startswith(prefix):
                line = line[len(prefix):].strip()
        line = line.strip().strip('"').strip("'").strip("\u201c\u201d").strip()
        if line:
            return " ".join(line.split())
    return ""


def car_rewrite(examples: Sequence[TrainingExample], backend: LLMBackend, cache: RewriteCache, *,
                template: str = CAR_PROMPT, max_passage_chars: int = 2000, keep_original: bool = False,
                workers: int = 1, progress: bool = True) -> tuple[list[TrainingExample], dict[str, int]]:
    """Rewrite every example's query with its first positive passage as context.

    Returns the new examples and counts {examples, rewritten, fallback} (fallback: the LLM gave nothing usable,
    the original query is kept).
    """
    prompts = [car_prompt(ex.query, ex.positives[0], template, max_passage_chars) for ex in examples]
    outputs = generate_all(backend, prompts, cache, workers=workers, progress=progress)
    out: list[TrainingExample] = []
    fallback = 0
    for ex, raw in zip(examples, outputs):
        rewrite = clean_rewrite(raw)
        if not rewrite:
            fallback += 1
            rewrite = ex.query
        if keep_original:
            out.append(ex)
        qid = None if ex.query_id is None else (f"{ex.query_id}-car" if keep_original else ex.query_id)
        out.append(TrainingExample(rewrite, list(ex.positives), list(ex.negatives), qid))
    if fallback:
        log.warning("%d of %d generation(s) were empty: kept the original query there", fallback, len(examples))
    return out, {"examples": len(examples), "rewritten": len(examples) - fallback, "fallback": fallback}


def car_file(train: str | Path, output: str | Path, backend: LLMBackend, cache: RewriteCache, *,
             shape: Shape | None = None, **kwargs) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Read a training file, CAR-rewrite it, write the new one (same shape unless `shape` is given) atomically."""
    in_shape = detect_shape(train)
    examples = list(read_training(train, in_shape))
    if not examples:
        raise PeftIRError(f"{train}: no training examples")
    if Path(output).resolve() == Path(train).resolve():
        raise PeftIRError(f"--output {output} would overwrite the input training file")
    rewritten, stats = car_rewrite(examples, backend, cache, **kwargs)
    write_training(rewritten, output, shape or in_shape)
    return stats
