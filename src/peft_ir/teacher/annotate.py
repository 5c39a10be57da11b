"""`peft-ir annotate`: a teacher's score for every training query's positives and first-stage candidates, written as
a scored training file (data/training.py's "scored" shape) that the trainers read.

Order of work: every input is read and checked (queries, qrels, corpus, run ids against the corpus, depth, the
teacher's files) before the teacher is loaded. Queries are scored in fixed blocks of BLOCK_QUERIES (block k is
always the same queries, so its batches, and hence its floating-point scores, are the same in any run); each
block's lines are appended to a partial file `.<output>.partial` beside the output, whose settings sit in
`.<output>.partial.json`. A killed run, started again with the same settings, keeps the partial file's whole
blocks and continues after them, so it ends with the same bytes as an uninterrupted run; with different settings
it is refused. A bi-encoder teacher first encodes every distinct passage of the plan once, in fixed chunks saved
in `.<output>.partial.passages/` (kept across a kill, the same vectors in any run). When complete the teacher is
recorded in `<output>.teacher.json` and the partial file is renamed to the output. An output whose record matches
the settings is reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peft_ir.atomic import atomic_open
from peft_ir.data import BeirDataset, Document, iter_corpus, ranked, read_run, read_training
from peft_ir.data.textfile import iter_tsv
from peft_ir.errors import InputError, PeftIRError
from peft_ir.fingerprint import file_hash, text_id
from peft_ir.precision import check_dtype, torch_dtype
from peft_ir.teacher import teachers
from peft_ir.teacher.config import AnnotateConfig
from peft_ir.teacher.teachers import Block, Teacher, load_teacher, resolve_teacher

log = logging.getLogger(__name__)

BLOCK_QUERIES = 16  # queries scored together: enough pairs to fill batches, little to redo after a kill
FSYNC_SECONDS = 30.0
FORMAT = "peft-ir scored jsonl 1"


@dataclass(frozen=True)
class Passage:
    docid: str
    title: str
    text: str
    label: int

    def joined(self) -> str:
        return f"{self.title} {self.text}" if self.title else self.text


@dataclass(frozen=True)
class Item:
    qid: str
    query: str
    passages: list[Passage]


@dataclass
class Plan:
    """The queries to annotate, in output order, and what the record says about where they came from."""

    items: list[Item]
    inputs: dict[str, Any]


@dataclass
class AnnotateStats:
    queries: int = 0
    passages: int = 0
    scored_queries: int = 0  # scored by the teacher in this call (the rest came from the partial file)
    resumed_from: int = 0
    reused: bool = False     # the output was already complete for these settings
    record: dict[str, Any] = field(default_factory=dict)


# --- inputs ------------------------------------------------------------------------------------------------------


def build_plan(cfg: AnnotateConfig) -> Plan:
    """Read and check every input: a BEIR split with a run, or a training file."""
    if (cfg.dataset is None) == (cfg.train is None):
        raise PeftIRError("give --dataset (a BEIR folder, with --run) or --train (a training file), not both")
    if cfg.train is not None:
        if cfg.run is not None:
            raise PeftIRError("--run needs --dataset: a training file carries its own candidates")
        return _file_plan(cfg.train)
    if cfg.run is None:
        raise PeftIRError("--dataset needs --run: the first-stage run whose top --depth hits are the candidates")
    if cfg.depth < 1:
        raise PeftIRError(f"--depth must be at least 1, got {cfg.depth}")
    return _beir_plan(cfg.dataset, cfg.split, cfg.run, cfg.depth)


def _beir_plan(dataset: str, split: str, run_path: str, depth: int) -> Plan:
    ds = BeirDataset(Path(dataset), split)
    queries, qrels = ds.queries(), ds.qrels()
    run = read_run(run_path)
    in_run = [q for q in qrels if q in run]
    if not in_run:
        raise InputError(run_path, None, "qid", f"none of the {len(qrels)} judged queries of split {split!r} "
                                                f"({ds.qrels_path}) is in this run, e.g. {next(iter(qrels), None)!r}")
    candidates = {q: [d for d, _ in ranked(run[q], depth)] for q in in_run}
    needed = {d for judged in qrels.values() for d, g in judged.items() if g > 0}
    needed.update(d for hits in candidates.values() for d in hits)
    docs = {d.id: d for d in iter_corpus(ds.corpus_path) if d.id in needed}
    missing = [(q, d) for q in in_run for d in candidates[q] if d not in docs]
    if missing:
        q, d = missing[0]
        raise InputError(run_path, _line_of(run_path, q, d), "docid",
                         f"document {d!r} (query {q!r}) is not in the corpus {ds.corpus_path}; {len(missing)} "
                         "hit(s) within --depth are absent: is this the run of this collection?")
    items, absent, dropped = [], set(), 0
    for qid, judged in qrels.items():
        positives = [d for d, g in judged.items() if g > 0]
        absent.update(d for d in positives if d not in docs)
        passages = [Passage(d, docs[d].title, docs[d].text, int(judged[d])) for d in positives if d in docs]
        if not passages:
            dropped += 1
            continue
        seen = {p.docid for p in passages}
        for d in candidates.get(qid, []):
            if d not in seen:
                seen.add(d)
                passages.append(Passage(d, docs[d].title, docs[d].text, 0))  # judged > 0 ones are positives
        items.append(Item(qid, queries[qid], passages))
    if absent:
        log.warning("%s: %d judged docid(s) absent from the corpus are skipped, e.g. %r; %d quer(ies) left without a "
                    "positive are dropped", ds.qrels_path, len(absent), sorted(absent)[0], dropped)
    without = sum(1 for it in items if it.qid not in candidates)
    if without:
        log.warning("%s: %d of %d quer(ies) have no hits in the run: only their positives are scored", run_path,
                    without, len(items))
    inputs = {"dataset": str(Path(dataset).resolve()), "split": split, "qrels_hash": file_hash(ds.qrels_path),
              "queries_hash": file_hash(ds.queries_path), "passages_hash": _passages_hash(docs.values()),
              "run": str(Path(run_path).resolve()), "run_hash": file_hash(Path(run_path)), "depth": depth}
    return Plan(items, inputs)


def _passages_hash(docs: Iterable[Document]) -> str:
    """A hash of the passages the plan scores (id, title, text), in id order: an edit of the corpus that touches them
    makes an earlier output stale, one of the same byte length included; the rest of the corpus does not."""
    digest = hashlib.sha256()
    for d in sorted(docs, key=lambda d: d.id):
        digest.update(json.dumps([d.id, d.title, d.text], ensure_ascii=False).encode())
    return digest.hexdigest()[:16]


def _line_of(path: str | Path, qid: str, docid: str) -> int | None:
    for lineno, fields in iter_tsv(path, ("qid", "Q0", "docid", "rank", "score", "tag"), sep=None):
        if fields[0] == qid and fields[2] == docid:
            return lineno
    return None


def _file_plan(path: str) -> Plan:
    """A training file's own passages; those without ids (FlagEmbedding, triples, Tevatron as read) get text ids."""
    items = []
    texts_of: dict[str, str] = {}  # docid -> its text over the whole file: a teacher scores each docid once
    for i, ex in enumerate(read_training(path)):
        qid = ex.query_id if ex.query_id is not None else str(i)
        passages: list[Passage] = []
        seen: set[str] = set()
        for texts, ids, label in ((ex.positives, ex.positive_ids, 1), (ex.negatives, ex.negative_ids, 0)):
            for j, text in enumerate(texts):
                docid = ids[j] if ids else text_id(text)
                if texts_of.setdefault(docid, text) != text:
                    raise InputError(path, None, "docid", f"{docid!r} names two different passages (query {qid}, "
                                     f"example {i + 1}, and an earlier one): ids that number passages per query "
                                     "(q-p0, q-n0) must not repeat a query id across lines")
                if docid not in seen:
                    seen.add(docid)
                    passages.append(Passage(docid, "", text, label))
        items.append(Item(qid, ex.query, passages))
    if not items:
        raise InputError(path, None, None, "no training examples")
    return Plan(items, {"train": str(Path(path).resolve()), "train_hash": file_hash(Path(path))})


# --- the resumable writer ----------------------------------------------------------------------------------------


def partial_paths(output: Path) -> tuple[Path, Path]:
    return output.with_name(f".{output.name}.partial"), output.with_name(f".{output.name}.partial.json")


def passage_store(output: Path) -> Path:
    """Where a teacher that prepares (a bi-encoder) keeps its passage vectors until the output is complete."""
    return output.with_name(f".{output.name}.partial.passages")


def _distinct_passages(items: Sequence[Item]) -> list[tuple[str, str]]:
    """Every docid of the plan once, with its text, in order of first appearance (the same order in every run)."""
    seen: dict[str, str] = {}
    for it in items:
        for p in it.passages:
            seen.setdefault(p.docid, p.joined())
    return list(seen.items())


def record_path(output: Path) -> Path:
    return output.with_name(f"{output.name}.teacher.json")


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} then, {b!r} now")
    return out


def _read_meta(meta: Path) -> dict[str, Any]:
    try:
        old = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PeftIRError(f"{meta}: the settings of a partial annotation are unreadable ({exc}); delete it and "
                          f"{meta.with_suffix('')} to start over") from None
    return old if isinstance(old, dict) else {}


def _refuse_other_settings(meta: Path, settings: dict[str, Any], what: str) -> None:
    diff = _differences(_read_meta(meta), settings)
    if diff:
        raise PeftIRError(f"{meta.with_suffix('')} is a partial annotation made with other {what} ("
                          + "; ".join(diff[:4]) + f"): re-run with those settings to resume it, or delete "
                          f"{meta.with_suffix('')} and {meta} to start over")


def _kept_lines(partial: Path, items: Sequence[Item]) -> int:
    """Truncate the partial file to its whole blocks (or all lines, when every query is done); returns the count.

    A line is whole when it ends with a newline and parses; a block is kept only with all of its lines, so that
    the next block is scored exactly as an uninterrupted run scores it."""
    good, offset = 0, 0
    with open(partial, "rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                break
            try:
                qid = json.loads(raw).get("query_id")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                break
            if good >= len(items) or qid != items[good].qid:
                raise PeftIRError(f"{partial}: line {good + 1} is query {qid!r}, the plan's is "
                                  f"{items[good].qid if good < len(items) else None!r}; delete it to start over")
            good += 1
            offset += len(raw)
    keep = good if good == len(items) else good - good % BLOCK_QUERIES
    if keep != good or offset != partial.stat().st_size:
        with open(partial, "rb") as fh:
            size = sum(len(raw) for _, raw in zip(range(keep), fh))
        with open(partial, "r+b") as fh:
            fh.truncate(size)
    return keep


def _blocks(items: Sequence[Item], start: int) -> Iterator[list[Item]]:
    for i in range(start, len(items), BLOCK_QUERIES):
        yield list(items[i:i + BLOCK_QUERIES])


def _line(item: Item, scores: Sequence[float]) -> str:
    passages = [{"docid": p.docid, "title": p.title, "text": p.text, "label": p.label, "score": s}
                for p, s in zip(item.passages, scores, strict=True)]
    return json.dumps({"query_id": item.qid, "query": item.query, "passages": passages}, ensure_ascii=False) + "\n"


def annotate(cfg: AnnotateConfig, device: str = "cpu") -> AnnotateStats:
    """Write the scored file at cfg.output (resuming a partial one); returns counts and the teacher's record."""
    source = resolve_teacher(cfg.scorer)
    check_dtype(torch_dtype(source.dtype), device)  # float16 on the CPU: refused before the inputs are read
    plan = build_plan(cfg)
    output = Path(cfg.output)
    partial, meta = partial_paths(output)
    settings = {"format": FORMAT, "inputs": plan.inputs, "teacher": source.record(),
                "batch_size": cfg.scorer.teacher_batch_size, "block_queries": BLOCK_QUERIES}
    if source.kind == "bi-encoder":
        settings["passage_chunk"] = teachers.PASSAGE_CHUNK  # its passages are encoded in these chunks
    if meta.is_file() and partial.is_file():
        _refuse_other_settings(meta, settings | {"fingerprint": _recorded_fingerprint(meta)}, "settings")
    teacher = load_teacher(source, device, cfg.scorer.teacher_batch_size)
    settings["fingerprint"] = teacher.fingerprint()
    stats = AnnotateStats(queries=len(plan.items), passages=sum(len(it.passages) for it in plan.items))
    if meta.is_file() and partial.is_file():
        _refuse_other_settings(meta, settings, "settings or another teacher")
    elif _up_to_date(output, settings):
        stats.reused, stats.record = True, json.loads(record_path(output).read_text(encoding="utf-8"))
        meta.unlink(missing_ok=True)
        return stats
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        partial.unlink(missing_ok=True)
        shutil.rmtree(passage_store(output), ignore_errors=True)
        with atomic_open(meta) as fh:
            json.dump(settings, fh, indent=2)
        partial.touch()
    start = _kept_lines(partial, plan.items)
    stats.resumed_from = start
    if start:
        log.info("%s: resuming after %d of %d queries", output, start, len(plan.items))
    if start < len(plan.items):
        passages = _distinct_passages(plan.items)
        log_truncated = getattr(teacher, "log_truncated", None)
        if log_truncated is not None:
            log_truncated([it.query for it in plan.items], [text for _, text in passages])
        prepare = getattr(teacher, "prepare", None)
        if prepare is not None:
            prepare(passages, passage_store(output), cfg.progress)
    _score_into(partial, plan.items, start, teacher, source.scale, cfg.progress)
    stats.scored_queries = len(plan.items) - start
    stats.record = settings | {"queries": stats.queries, "passages": stats.passages}
    with atomic_open(record_path(output)) as fh:
        json.dump(stats.record, fh, indent=2)
    os.replace(partial, output)
    meta.unlink()
    shutil.rmtree(passage_store(output), ignore_errors=True)
    return stats


def _recorded_fingerprint(meta: Path) -> Any:
    return _read_meta(meta).get("fingerprint")


def _up_to_date(output: Path, settings: dict[str, Any]) -> bool:
    record = record_path(output)
    if not (output.is_file() and record.is_file()):
        return False
    try:
        old = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return {k: old.get(k) for k in settings} == settings


def _score_into(partial: Path, items: Sequence[Item], start: int, teacher: Teacher, scale: float,
                progress: bool) -> None:
    from tqdm.auto import tqdm  # noqa: PLC0415

    synced = time.monotonic()
    with open(partial, "a", encoding="utf-8") as fh, \
            tqdm(total=len(items), initial=start, unit="query", desc="annotate", disable=not progress) as bar:
        for block in _blocks(items, start):
            scores = teacher.score([Block(it.qid, it.query, [(p.docid, p.joined()) for p in it.passages])
                                    for it in block])
            if scale != 1.0:
                scores = [[x * scale for x in row] for row in scores]
            fh.write("".join(_line(it, s) for it, s in zip(block, scores, strict=True)))
            fh.flush()  # in the OS's hands: a SIGKILL loses nothing written
            if time.monotonic() - synced >= FSYNC_SECONDS:
                os.fsync(fh.fileno())
                synced = time.monotonic()
            bar.update(len(block))
        fh.flush()
        os.fsync(fh.fileno())


def scores_by_query(path: str | Path) -> dict[str, dict[str, float]]:
    """{query_id: {docid: teacher score}} of a scored training file."""
    out: dict[str, dict[str, float]] = {}
    for i, ex in enumerate(read_training(path, "scored")):
        qid = ex.query_id if ex.query_id is not None else str(i)
        ids = (ex.positive_ids or []) + (ex.negative_ids or [])
        out[qid] = dict(zip(ids, (ex.positive_scores or []) + (ex.negative_scores or []), strict=True))
    return out
