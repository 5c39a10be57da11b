"""An append-only JSONL cache of LLM generations, so that rewriting is reproducible and resumable.

Each line: {"key": sha256 hex, "model": backend model id, "output": generated text}. The key is the sha256 of
the backend's model id (which includes the generation settings) and the exact prompt. Lines are appended and
flushed one at a time, so an interrupted run keeps everything it had generated; a torn last line (a crash in
mid-write) is ignored, and cut off on the next append. No credential is ever part of a line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import IO

from peft_ir.errors import InputError

log = logging.getLogger(__name__)


def cache_key(model_id: str, prompt: str) -> str:
    return hashlib.sha256(json.dumps([model_id, prompt], ensure_ascii=False).encode("utf-8")).hexdigest()


class RewriteCache:
    """{key: output} backed by a JSONL file (or memory only when `path` is None)."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self._entries: dict[str, str] = {}
        self._lock = threading.Lock()
        self._fh: IO[str] | None = None
        self._needs_newline = False
        self._truncate_at: int | None = None
        if self.path is not None and self.path.exists():
            self._load()

    def _load(self) -> None:
        assert self.path is not None
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        offset = 0
        for lineno, raw in enumerate(lines, start=1):
            start, offset = offset, offset + len(raw) + 1
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
                key, output = obj["key"], obj["output"]
                if not isinstance(key, str) or not isinstance(output, str):
                    raise TypeError
            except (ValueError, KeyError, TypeError):
                if lineno == len(lines):  # the torn last line of an interrupted run: cut it at the next append
                    log.warning("%s: ignoring an incomplete last line (interrupted run)", self.path)
                    self._truncate_at = start
                    continue
                raise InputError(self.path, lineno, None, "not a rewrite-cache line ({key, model, output})") from None
            self._entries[key] = output
        self._needs_newline = self._truncate_at is None and bool(data) and not data.endswith(b"\n")
        log.info("rewrite cache %s: %d entries", self.path, len(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> str | None:
        return self._entries.get(key)

    def put(self, key: str, model_id: str, output: str) -> None:
        with self._lock:
            self._entries[key] = output
            if self.path is None:
                return
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if self._truncate_at is not None:
                    with open(self.path, "r+b") as raw:
                        raw.truncate(self._truncate_at)
                    self._truncate_at = None
                self._fh = open(self.path, "a", encoding="utf-8")
                if self._needs_newline:
                    self._fh.write("\n")
                    self._needs_newline = False
            self._fh.write(json.dumps({"key": key, "model": model_id, "output": output}, ensure_ascii=False) + "\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    def __enter__(self) -> RewriteCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
