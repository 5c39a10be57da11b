"""Training files in the three shapes users already have, read into one `TrainingExample` stream.

- Tevatron v2 jsonl: {query_id, query, positive_passages:[{docid,title,text}], negative_passages:[...]}
- FlagEmbedding jsonl: {query, pos:[text], neg:[text]}
- triples tsv: query<TAB>positive<TAB>negative
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from peft_ir.atomic import atomic_open
from peft_ir.data.textfile import get_field, iter_jsonl, iter_lines, iter_tsv
from peft_ir.errors import InputError

Shape = Literal["tevatron", "flag", "triples"]


@dataclass(slots=True)
class TrainingExample:
    query: str
    positives: list[str]
    negatives: list[str] = field(default_factory=list)
    query_id: str | None = None


def detect_shape(path: str | Path) -> Shape:
    """Guess the shape from the first non-blank line (tsv vs which JSON keys)."""
    for lineno, line in iter_lines(path):
        if not line.lstrip().startswith("{"):
            return "triples"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(path, lineno, None, f"malformed JSON ({exc.msg} at column {exc.colno})") from None
        if isinstance(obj, dict) and "positive_passages" in obj:
            return "tevatron"
        if isinstance(obj, dict) and "pos" in obj:
            return "flag"
        raise InputError(path, lineno, None, "unknown training format: expected Tevatron keys "
                         "(query, positive_passages) or FlagEmbedding keys (query, pos, neg)")
    raise InputError(path, None, None, "empty training file")


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
        q = get_field(obj, "query", str, path, lineno)
        _require_text(q, path, lineno, "query")
        if shape == "tevatron":
            pos = _passages(get_field(obj, "positive_passages", list, path, lineno), path, lineno, "positive_passages")
            neg = _passages(obj.get("negative_passages") or [], path, lineno, "negative_passages")
            qid = get_field(obj, "query_id", str, path, lineno, required=False)
        else:
            pos = _texts(get_field(obj, "pos", list, path, lineno), path, lineno, "pos")
            neg = _texts(obj.get("neg") or [], path, lineno, "neg")
            qid = get_field(obj, "query_id", str, path, lineno, required=False)
        if not pos:
            raise InputError(path, lineno, "positive_passages" if shape == "tevatron" else "pos", "no positive passage")
        yield TrainingExample(q, pos, neg, qid)


def _require_text(value: str, path: str | Path, lineno: int, key: str) -> None:
    if not value.strip():
        raise InputError(path, lineno, key, "empty text")


def write_training(examples: Iterable[TrainingExample], path: str | Path, shape: Shape = "flag") -> None:
    """Write examples in one of the three shapes (temp file + rename)."""
    with atomic_open(path) as fh:
        for i, ex in enumerate(examples):
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
