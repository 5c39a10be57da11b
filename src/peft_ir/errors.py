"""Errors that the CLI reports as a clean message with exit code 2 (bad input, mismatches)."""

from __future__ import annotations

from pathlib import Path


class PeftIRError(Exception):
    """Any error caused by the user's input or set-up rather than by a bug; the CLI exits with 2."""


class InputError(PeftIRError):
    """A malformed input file: names the file, the 1-based line and the field at fault."""

    def __init__(self, path: str | Path, line: int | None, field: str | None, message: str):
        self.path = str(path)
        self.line = line
        self.field = field
        self.message = message
        where = self.path if line is None else f"{self.path}:{line}"
        what = f" field '{field}':" if field else ""
        super().__init__(f"{where}:{what} {message}")


class MismatchError(PeftIRError):
    """Two artefacts that must agree do not (adapter vs base model, query encoder vs index); names both sides."""
