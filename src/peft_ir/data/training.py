"""Training files in the three shapes users already have, read into one `TrainingExample` stream.

- Tevatron v2 jsonl: {query_id, query, positive_passages:[{docid,title,text}], negative_passages:[...]}
- FlagEmbedding jsonl: {query, pos:[text], neg:[text]}
- triples tsv: query<TAB>positive<TAB>negative
- scored jsonl (teacher-annotated, what `peft-ir annotate` writes and the distillation losses read):
  {query_id, query, passages:[{docid, title, text, label, score}]}: label > 0 marks a positive, score is the
  teacher's score of (query, passage); extra keys (e.g. "teacher") are ignored.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from peft_ir.atomic import atomic_open
from peft_ir.data.textfile import get_field, iter_jsonl, iter_lines, iter_tsv
from peft_ir.errors import InputError

Shape = Literal["tevatron", "flag", "triples", "scored"]


@dataclass(slots=True)
class TrainingExample:
    query: str
    positives: list[str]
    negatives: list[str] = field(default_factory=list)
    query_id: str | None = None
    # Teacher scores (scored files only), aligned with positives / negatives; None when the file has none.
    positive_scores: list[float] | None = None
    negative_scores: list[float] | None = None
    # Passage ids (scored files), aligned with positives / negatives.
    positive_ids: list[str] | None = None
    negative_ids: list[str] | None = None
    # The first-stage run's top hits (texts, in rank order, judged ones included) when a run was given: the dev
    # sets put them in front of the model (data/dev_split.py). None without a run.
    first_stage: list[str] | None = None

    @property
    def scored(self) -> bool:
        return self.positive_scores is not None and self.negative_scores is not None


def detect_shape(path: str | Path) -> Shape:
    """Guess the shape from the first non-blank line (tsv vs which JSON keys)."""
    for lineno, line in iter_lines(path):
        if not line.lstrip().startswith("{"):
            return "triples"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(path, lineno, None, f"malformed JSON ({exc.msg} at column {exc.colno})") from None
        return shape_of(obj, path, lineno)
    raise InputError(path, None, None, "empty training file")


def shape_of(obj: Any, path: str | Path, lineno: int | None) -> Shape:
    """The JSON shape a record's keys say (scored, Tevatron or FlagEmbedding): file lines and dataset rows alike."""
    if isinstance(obj, dict) and "passages" in obj:
        return "scored"
    if isinstance(obj, dict) and "positive_passages" in obj:
        return "tevatron"
    if isinstance(obj, dict) and "pos" in obj:
        return "flag"
    raise InputError(path, lineno, None, "unknown training format: expected Tevatron keys "
                     "(query, positive_passages), FlagEmbedding keys (query, pos, neg) or scored keys (query, passages)")


def _texts(value: Any, path: str | Path, lineno: int, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(path, lineno, key, "expected a list of strings")
    return value


def _passages(value: Any, path: str | Path, lineno: int, key: str) -> list[str]:
    if not isinstance(value, list):
        raise InputError(path, lineno, key, "expected a list of passages")
    out = []
    for i, p in enumerate(value):
        if not isinstance(p, dict) or not isinstance(p.get("text"), str):
            raise InputError(path, lineno, f"{key}[{i}].text", "missing or not a string")
        title = p.get("title") or ""
        if not isinstance(title, str):
            raise InputError(path, lineno, f"{key}[{i}].title", "expected a string")
        out.append(f"{title} {p['text']}" if title else p["text"])
    return out


def _scored(obj: dict[str, Any], path: str | Path, lineno: int) -> TrainingExample:
    """One scored line: every passage needs docid, text, label and a finite teacher score; one positive at least."""
    q = get_field(obj, "query", str, path, lineno)
    _require_text(q, path, lineno, "query")
    passages = get_field(obj, "passages", list, path, lineno)
    ex = TrainingExample(q, [], [], get_field(obj, "query_id", str, path, lineno, required=False),
                         [], [], [], [])
    for i, p in enumerate(passages):
        key = f"passages[{i}]"
        if not isinstance(p, dict):
            raise InputError(path, lineno, key, "expected an object {docid, title, text, label, score}")
        docid = p.get("docid")
        if not isinstance(docid, str):
            raise InputError(path, lineno, f"{key}.docid", "missing or not a string")
        text, title = p.get("text"), p.get("title") or ""
        if not isinstance(text, str):
            raise InputError(path, lineno, f"{key}.text", "missing or not a string")
        if not isinstance(title, str):
            raise InputError(path, lineno, f"{key}.title", "expected a string")
        label, score = p.get("label"), p.get("score")
        if not isinstance(label, int) or isinstance(label, bool):
            raise InputError(path, lineno, f"{key}.label", "missing or not an integer (relevance grade; > 0 is positive)")
        if not isinstance(score, int | float) or isinstance(score, bool) or not math.isfinite(score):
            raise InputError(path, lineno, f"{key}.score", f"missing or not a finite number (the teacher's score), got {score!r}")
        joined = f"{title} {text}" if title else text
        texts, scores, ids = ((ex.positives, ex.positive_scores, ex.positive_ids) if label > 0
                              else (ex.negatives, ex.negative_scores, ex.negative_ids))
        texts.append(joined)
        scores.append(float(score))  # type: ignore[union-attr]
        ids.append(docid)  # type: ignore[union-attr]
    if not ex.positives:
        raise InputError(path, lineno, "passages", "no positive passage (label > 0)")
    return ex


def read_training(path: str | Path, shape: Shape | None = None) -> Iterator[TrainingExample]:
    """Stream training examples; every example must have a non-empty query and at least one positive."""
    shape = shape or detect_shape(path)
    if shape == "triples":
        for lineno, fields in iter_tsv(path, ("query", "positive", "negative")):
            if len(fields) != 3:
                raise InputError(path, lineno, None, f"expected 3 tab-separated fields (query, positive, negative), got {len(fields)}")
            q, pos, neg = fields
            _require_text(q, path, lineno, "query")
            yield TrainingExample(q, [pos], [neg])
        return
    for lineno, obj in iter_jsonl(path):
        yield example_from_object(obj, shape, path, lineno)


def example_from_object(obj: dict[str, Any], shape: Shape, path: str | Path, lineno: int) -> TrainingExample:
    """One JSON record (a file's line or a dataset's row) of a JSON shape, validated; errors name path, line, field."""
    if shape == "scored":
        return _scored(obj, path, lineno)
    q = get_field(obj, "query", str, path, lineno)
    _require_text(q, path, lineno, "query")
    if shape == "tevatron":
        pos = _passages(get_field(obj, "positive_passages", list, path, lineno), path, lineno, "positive_passages")
        neg = _passages(obj.get("negative_passages") or [], path, lineno, "negative_passages")
    else:
        pos = _texts(get_field(obj, "pos", list, path, lineno), path, lineno, "pos")
        neg = _texts(obj.get("neg") or [], path, lineno, "neg")
    qid = get_field(obj, "query_id", str, path, lineno, required=False)
    if not pos:
        raise InputError(path, lineno, "positive_passages" if shape == "tevatron" else "pos", "no positive passage")
    return TrainingExample(q, pos, neg, qid)


def _require_text(value: str, path: str | Path, lineno: int, key: str) -> None:
    if not value.strip():
        raise InputError(path, lineno, key, "empty text")


def write_training(examples: Iterable[TrainingExample], path: str | Path, shape: Shape = "flag") -> None:
    """Write examples in one of the four shapes (temp file + rename); "scored" needs teacher scores on every example."""
    with atomic_open(path) as fh:
        for i, ex in enumerate(examples):
            if shape == "scored":
                fh.write(json.dumps(scored_line(ex, i), ensure_ascii=False) + "\n")
                continue
            if shape == "triples":
                for pos in ex.positives:
                    for neg in ex.negatives:
                        fh.write("\t".join(" ".join(t.split()) for t in (ex.query, pos, neg)) + "\n")
                continue
            if shape == "tevatron":
                qid = ex.query_id if ex.query_id is not None else str(i)
                obj: dict[str, Any] = {
                    "query_id": qid, "query": ex.query,
                    "positive_passages": [{"docid": f"{qid}-p{j}", "title": "", "text": t} for j, t in enumerate(ex.positives)],
                    "negative_passages": [{"docid": f"{qid}-n{j}", "title": "", "text": t} for j, t in enumerate(ex.negatives)],
                }
            else:
                obj = {"query": ex.query, "pos": ex.positives, "neg": ex.negatives}
                if ex.query_id is not None:
                    obj["query_id"] = ex.query_id
            fh.write(json.dumps(obj, ensure_ascii=False) + "\n")


def scored_line(ex: TrainingExample, index: int = 0) -> dict[str, Any]:
    """The scored-jsonl object of one example (label 1 for positives, 0 for negatives); ids default to q-p0, q-n0."""
    if not ex.scored:
        raise ValueError(f"example {ex.query_id or index} has no teacher scores")
    qid = ex.query_id if ex.query_id is not None else str(index)
    pos_ids = ex.positive_ids or [f"{qid}-p{j}" for j in range(len(ex.positives))]
    neg_ids = ex.negative_ids or [f"{qid}-n{j}" for j in range(len(ex.negatives))]
    passages = [{"docid": d, "title": "", "text": t, "label": 1, "score": s}
                for d, t, s in zip(pos_ids, ex.positives, ex.positive_scores or [], strict=True)]
    passages += [{"docid": d, "title": "", "text": t, "label": 0, "score": s}
                 for d, t, s in zip(neg_ids, ex.negatives, ex.negative_scores or [], strict=True)]
    return {"query_id": qid, "query": ex.query, "passages": passages}
