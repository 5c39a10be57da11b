"""Static guards: no pickle, no unsafe torch.load or np.load, no remote code, secrets only from the environment."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "peft_ir"
FILES = sorted(SRC.rglob("*.py"))

FORBIDDEN = [
    (re.compile(r"^\s*(import|from)\s+(c?pickle|dill|joblib)\b", re.M), "pickle-based (de)serialisation"),
    (re.compile(r"torch\.load\((?![^)]*weights_only\s*=\s*True)"), "torch.load without weights_only=True"),
    (re.compile(r"allow_pickle\s*=\s*True"), "np.load with allow_pickle=True"),
    (re.compile(r"trust_remote_code\s*=\s*True"), "remote code turned on"),
    (re.compile(r"(api_key|API_KEY)\s*=\s*['\"][^'\"]+['\"]"), "a hard-coded API key"),
]


@pytest.mark.parametrize("pattern, what", FORBIDDEN, ids=[w for _, w in FORBIDDEN])
def test_source_never_does(pattern: re.Pattern[str], what: str) -> None:
    hits = [f"{p.relative_to(SRC)}:{src[:m.start()].count(chr(10)) + 1}" for p in FILES
            for src in [p.read_text(encoding="utf-8")] for m in pattern.finditer(src)]
    assert not hits, f"{what}: {hits}"


def test_the_guards_fire() -> None:
    """Each pattern catches the line it is meant to catch (so a passing scan means something)."""
    bad = ["import pickle", "x = torch.load(path)", "np.load(p, allow_pickle=True)",
           "AutoModel.from_pretrained(p, trust_remote_code=True)", "api_key = 'sk-123'"]
    for (pattern, what), line in zip(FORBIDDEN, bad):
        assert pattern.search(line), what
    assert not FORBIDDEN[1][0].search("torch.load(path, weights_only=True)")
