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
import re
from collections.abc import Sequence
from pathlib import Path

from peft_ir.data.training import Shape, TrainingExample, detect_shape, read_training, write_training
from peft_ir.errors import PeftIRError
from peft_ir.rewrite.cache import RewriteCache, cache_key
from peft_ir.rewrite.llm import LLMBackend, generate_all, generate_missing

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
    fill = {"passage": passage, "query": " ".join(query.split())}
    # one pass: a "{query}" inside the passage's own text stays as it is
    return re.sub(r"\{(passage|query)\}", lambda m: fill[m.group(1)], template)


def clean_rewrite(text: str) -> str:
    """First non-empty line of a generation, without a 'Rewritten query:' style prefix, markdown bold or wrapping
    quotes; a line that only introduces what follows ("Here is the rewritten query:") is skipped when more follows."""
    lines = [re.sub(r"\*\*(.*?)\*\*", r"\1", line).strip() for line in text.strip().splitlines()]  # **bold**
    lines = [line for line in lines if line]
    for i, line in enumerate(lines):
        for prefix in ("rewritten query:", "query:", "rewrite:"):
            if line.lower().startswith(prefix):
                line = line[len(prefix):].strip()
        if line.endswith(":") and i + 1 < len(lines):
            continue  # a preamble, the rewrite is on the next line
        line = line.strip().strip('"').strip("'").strip("\u201c\u201d").strip()
        if line:
            return " ".join(line.split())
    return ""


def _rewritten(ex: TrainingExample, raw: str, keep_original: bool) -> tuple[list[TrainingExample], bool]:
    rewrite = clean_rewrite(raw)
    fell_back = not rewrite
    rewrite = rewrite or ex.query
    qid = None if ex.query_id is None else (f"{ex.query_id}-car" if keep_original else ex.query_id)
    new = TrainingExample(rewrite, list(ex.positives), list(ex.negatives), qid)
    return ([ex, new] if keep_original else [new]), fell_back


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
        new, fell_back = _rewritten(ex, raw, keep_original)
        out += new
        fallback += fell_back
    _warn(fallback, len(examples))
    return out, {"examples": len(examples), "rewritten": len(examples) - fallback, "fallback": fallback}


def _warn(fallback: int, n: int) -> None:
    if fallback:
        log.warning("%d of %d generation(s) were empty: kept the original query there", fallback, n)


def car_file(train: str | Path, output: str | Path, backend: LLMBackend, cache: RewriteCache, *,
             shape: Shape | None = None, template: str = CAR_PROMPT, max_passage_chars: int = 2000,
             keep_original: bool = False, workers: int = 1, progress: bool = True) -> dict[str, int]:
    """CAR-rewrite a training file into `output` (same shape unless `shape` is given).

    Streams the file twice (prompts first, then the rewritten examples), so memory holds only the prompts still
    to generate; the output is written through a temporary file and appears only when every rewrite succeeded.
    """
    if Path(output).resolve() == Path(train).resolve():
        raise PeftIRError(f"--output {output} would overwrite the input training file")
    in_shape = detect_shape(train)
    keys: list[str] = []
    todo: dict[str, str] = {}
    for ex in read_training(train, in_shape):
        prompt = car_prompt(ex.query, ex.positives[0], template, max_passage_chars)
        key = cache_key(backend.model_id, prompt)
        keys.append(key)
        if key not in cache:
            todo[key] = prompt
    if not keys:
        raise PeftIRError(f"{train}: no training examples")
    generate_missing(backend, todo, cache, workers=workers, progress=progress)
    del todo
    fallback = 0

    def examples():  # type: ignore[no-untyped-def]
        nonlocal fallback
        for ex, key in zip(read_training(train, in_shape), keys, strict=True):
            output = cache.get(key)
            if output is None:  # cannot happen unless the cache was changed underneath us
                raise PeftIRError(f"no generation cached for an example of {train}")
            new, fell_back = _rewritten(ex, output, keep_original)
            fallback += fell_back
            yield from new

    write_training(examples(), output, shape or in_shape)
    _warn(fallback, len(keys))
    return {"examples": len(keys), "rewritten": len(keys) - fallback, "fallback": fallback}
