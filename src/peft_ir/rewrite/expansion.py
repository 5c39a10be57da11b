"""Query-time LLM expansion: query2doc and HyDE. Both write a new topics file that any retriever can search.

- query2doc (Wang et al. 2023): the LLM writes a pseudo-passage for the query; the new query is the original
  query repeated `repeat` times followed by the passage (the paper: 5 times for BM25; once, with a [SEP]-like
  separator, for dense retrievers).
- HyDE (Gao et al. 2022): the LLM writes a hypothetical passage that answers the query; that passage replaces
  the query, to be embedded by a dense encoder.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Literal

from peft_ir.errors import PeftIRError
from peft_ir.rewrite.cache import RewriteCache
from peft_ir.rewrite.llm import LLMBackend, generate_all

log = logging.getLogger(__name__)

Mode = Literal["query2doc", "hyde"]

QUERY2DOC_PROMPT = "Write a passage that answers the given query.\n\nQuery: {query}\nPassage:"
HYDE_PROMPTS = {
    "web": "Please write a passage to answer the question.\nQuestion: {query}\nPassage:",
    "scifact": "Please write a scientific paper passage to support/refute the claim.\nClaim: {query}\nPassage:",
    "arguana": "Please write a counter argument for the passage.\nPassage: {query}\nCounter Argument:",
    "trec-covid": "Please write a scientific paper passage to answer the question.\nQuestion: {query}\nPassage:",
    "fiqa": "Please write a financial article passage to answer the question.\nQuestion: {query}\nPassage:",
}


def prompt_for(mode: Mode, query: str, template: str | None = None, task: str = "web") -> str:
    if template is None:
        if mode == "query2doc":
            template = QUERY2DOC_PROMPT
        elif task in HYDE_PROMPTS:
            template = HYDE_PROMPTS[task]
        else:
            raise PeftIRError(f"no HyDE prompt for task {task!r}: use one of {sorted(HYDE_PROMPTS)} or --prompt-file")
    if "{query}" not in template:
        raise PeftIRError("a prompt template must contain {query}")
    return template.replace("{query}", " ".join(query.split()))


def expand_query(mode: Mode, query: str, generated: str, repeat: int = 5, sep: str = " ") -> str:
    """The new query text: query2doc = (query + sep) * repeat + passage; HyDE = passage. Whitespace collapsed."""
    passage = " ".join(generated.split())
    if not passage:
        return query
    if mode == "hyde":
        return passage
    if mode == "query2doc":
        return sep.join([" ".join(query.split())] * max(1, repeat) + [passage])
    raise PeftIRError(f"unknown expansion mode {mode!r}: use query2doc or hyde")


def expand_topics(topics: Mapping[str, str], mode: Mode, backend: LLMBackend, cache: RewriteCache, *,
                  template: str | None = None, task: str = "web", repeat: int = 5, sep: str = " ",
                  workers: int = 1, progress: bool = True) -> dict[str, str]:
    """New topics {qid: expanded text}; a query whose generation came back empty keeps its text (logged)."""
    if mode not in ("query2doc", "hyde"):
        raise PeftIRError(f"unknown expansion mode {mode!r}: use query2doc or hyde")
    qids = list(topics)
    prompts = [prompt_for(mode, topics[q], template, task) for q in qids]
    outputs = generate_all(backend, prompts, cache, workers=workers, progress=progress)
    empty = sum(1 for o in outputs if not o.strip())
    if empty:
        log.warning("%d of %d generation(s) were empty: kept the original query there", empty, len(qids))
    return {q: expand_query(mode, topics[q], out, repeat, sep) for q, out in zip(qids, outputs)}
