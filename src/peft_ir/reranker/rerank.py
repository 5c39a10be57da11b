"""Re-rank the top hits of a first-stage run with a cross-encoder; scores are cached so an interrupted run resumes.

The cache is a jsonl file of {"q": qid, "d": docid, "h": text hash, "m": model, "s": score} lines, by default one
file per model state: its name holds a hash of every parameter of the (tuned) model and the token limits, and "m"
the same hash, so a different model or adapter never reuses another's scores, not even in a cache file named by
hand (`--cache`); "h" hashes the query and passage text, so a rewritten query or a changed corpus under the same
ids is scored anew. Lines are appended and flushed to the OS after every batch, so a killed
process loses nothing scored; they are synced to disk (against power loss) every FSYNC_SECONDS and on close, not
after every batch. A torn last line (killed mid-write) is ignored when the cache is read back, and so is a line
without "h" (an older cache).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from peft_ir.data import iter_documents, load_topics, ranked
from peft_ir.data.trec import Run, append_rest
from peft_ir.devices import log_device
from peft_ir.errors import InputError, PeftIRError
from peft_ir.fingerprint import pair_hash
from peft_ir.reranker.model import CrossEncoder

log = logging.getLogger(__name__)

CHUNK = 4096  # pairs tokenised and length-sorted at a time
FSYNC_SECONDS = 30.0  # a GPU scores a 32-pair batch in milliseconds: an fsync per batch would be the bottleneck


Key = tuple[str, str, str]  # (qid, docid, pair_hash of their texts)


class ScoreCache:
    """(qid, docid, text hash) -> score of one model (`model`: its fingerprint), persisted as append-only jsonl.
    Lines of another model are ignored; lines without a model (caches from before "m") only in a file whose name
    holds the model's fingerprint (the default name)."""

    def __init__(self, path: str | Path | None, fsync_seconds: float = FSYNC_SECONDS, model: str | None = None):
        self.path = Path(path) if path else None
        self.model = model[:16] if model else None
        self.fsync_seconds = fsync_seconds
        self._synced = time.monotonic()
        self._unsynced = False
        self.scores: dict[Key, float] = {}
        old = other = 0
        if self.path is not None and self.path.is_file():
            unmarked_ok = self.model is None or self.model in self.path.name
            with open(self.path, encoding="utf-8") as fh:
                for line in fh:
                    if not line.strip():
                        continue  # the separator a resumed run writes (blank when the last line was whole)
                    try:
                        row = json.loads(line)
                        if "h" not in row and {"q", "d", "s"} <= row.keys():
                            old += 1
                            continue
                        mark = row.get("m")
                        if self.model is not None and (mark != self.model if mark is not None else not unmarked_ok):
                            other += 1
                            continue
                        self.scores[(row["q"], row["d"], row["h"])] = float(row["s"])
                    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                        log.warning("%s: skipping a torn cache line (interrupted write)", self.path)
        if old:
            log.info("%s: ignoring %d old-format cache line(s) without a text hash; their pairs are scored anew",
                     self.path, old)
        if other:
            log.warning("%s: ignoring %d cached score(s) of another model (or of an unknown one); their pairs are "
                        "scored anew by this one", self.path, other)
        self._fh: IO[str] | None = None

    def __contains__(self, key: Key) -> bool:
        return key in self.scores

    def __len__(self) -> int:
        return len(self.scores)

    def get(self, key: Key) -> float:
        return self.scores[key]

    def add(self, rows: Iterable[tuple[str, str, str, float]]) -> None:
        rows = list(rows)
        for q, d, h, s in rows:
            self.scores[(q, d, h)] = s
        if self.path is None:
            return
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")
            if self._fh.tell() > 0:
                self._fh.write("\n")  # a torn last line from an earlier run stays on its own line
        mark = {"m": self.model} if self.model else {}
        self._fh.write("".join(json.dumps({"q": q, "d": d, "h": h, **mark, "s": s}) + "\n" for q, d, h, s in rows))
        self._fh.flush()  # in the OS's hands: survives a SIGKILL of this process
        self._unsynced = True
        if time.monotonic() - self._synced >= self.fsync_seconds:
            self._sync()

    def _sync(self) -> None:
        assert self._fh is not None
        if self._unsynced:
            os.fsync(self._fh.fileno())
            self._unsynced = False
        self._synced = time.monotonic()

    def close(self) -> None:
        if self._fh is not None:
            self._sync()
            self._fh.close()
            self._fh = None


def default_cache_path(output: str | Path, encoder: CrossEncoder) -> Path:
    out = Path(output)
    return out.with_name(f".{out.name}.scores-{encoder.fingerprint()[:16]}.jsonl")


@dataclass
class RerankStats:
    queries: int = 0
    pairs: int = 0            # pairs in the re-ranked depth
    scored: int = 0           # pairs scored by the model in this call (the rest came from the cache)


def rerank(run: Run, topics: Mapping[str, str], passages: Mapping[str, str], encoder: CrossEncoder, *,
           hits: int = 100, batch_size: int = 32, cache: ScoreCache | None = None,
           stats: RerankStats | None = None) -> Run:
    """Cross-encoder scores for the top `hits` of each query (deeper hits are dropped); queries in run order."""
    if hits < 1:
        raise PeftIRError(f"--hits must be at least 1, got {hits}")
    cache = cache if cache is not None else ScoreCache(None)
    stats = stats if stats is not None else RerankStats()
    todo: list[Key] = []
    depth: dict[str, list[Key]] = {}
    for qid, q_hits in run.items():
        depth[qid] = [(qid, d, pair_hash(topics[qid], passages[d])) for d, _ in ranked(q_hits, hits)]
        todo += [key for key in depth[qid] if key not in cache]
    stats.queries, stats.pairs = len(depth), sum(len(v) for v in depth.values())
    if todo:
        log_device("re-ranking", encoder.device)
        encoder.log_truncated([topics[q] for q in depth], [passages[d] for _, d, _ in todo], "re-ranking")
    for start in range(0, len(todo), CHUNK):
        chunk = todo[start:start + CHUNK]

        def store(idx: list[int], values: list[float], chunk: list[Key] = chunk) -> None:
            cache.add((*chunk[i], v) for i, v in zip(idx, values))
            stats.scored += len(idx)

        encoder.score([topics[q] for q, _, _ in chunk], [passages[d] for _, d, _ in chunk], batch_size,
                      on_batch=store)
        log.info("scored %d of %d pairs", min(start + CHUNK, len(todo)), len(todo))
    return {qid: {d: cache.get((qid, d, h)) for _, d, h in keys} for qid, keys in depth.items()}


def load_inputs(run_path: str | Path, topics_spec: str | Path, corpus_spec: str | Path, hits: int, split: str = "test"
                ) -> tuple[Run, dict[str, str], dict[str, str]]:
    """Read the run, its topics and the text of the documents in its top `hits`; ids absent from the topics or
    the corpus raise InputError naming the file at fault."""
    from peft_ir.data import read_run  # noqa: PLC0415

    run = read_run(run_path)
    if not run:
        raise InputError(run_path, None, None, "empty run")
    topics = load_topics(topics_spec, split)
    missing_q = [q for q in run if q not in topics]
    if missing_q:
        raise InputError(topics_spec, None, None, f"{len(missing_q)} query id(s) of run {run_path} are not in these "
                         f"topics, e.g. {missing_q[:3]}")
    needed = {d for q_hits in run.values() for d, _ in ranked(q_hits, hits)}
    passages: dict[str, str] = {}
    for doc in iter_documents(corpus_spec):
        if doc.id in needed:
            passages[doc.id] = doc.joined()
    missing_d = sorted(needed - passages.keys())
    if missing_d:
        raise InputError(corpus_spec, None, None, f"{len(missing_d)} document id(s) of run {run_path} are not in this "
                         f"corpus, e.g. {missing_d[:3]}")
    return run, topics, passages


def rerank_files(run_path: str | Path, topics_spec: str | Path, corpus_spec: str | Path, encoder: CrossEncoder,
                 output: str | Path, *, hits: int = 100, batch_size: int = 32, split: str = "test",
                 cache_path: str | Path | None = None, tag: str = "peft-ir-rerank", keep_rest: bool = False
                 ) -> RerankStats:
    """Re-rank a run file into a TREC run at `output` (atomic); the score cache sits beside it unless given.

    With `keep_rest`, each query's hits below `hits` follow the re-ranked ones in their first-stage order, so
    measures deeper than `hits` (R@100, AP) stay comparable with the first stage."""
    from peft_ir.data import write_run  # noqa: PLC0415

    run, topics, passages = load_inputs(run_path, topics_spec, corpus_spec, hits, split)
    cache = ScoreCache(cache_path or default_cache_path(output, encoder), model=encoder.fingerprint())
    stats = RerankStats()
    try:
        reranked = rerank(run, topics, passages, encoder, hits=hits, batch_size=batch_size, cache=cache, stats=stats)
    finally:
        cache.close()
    if keep_rest:
        reranked = {qid: append_rest(scores, ranked(run[qid], None)) for qid, scores in reranked.items()}
    write_run(reranked, output, tag=tag)
    return stats
