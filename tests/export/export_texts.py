"""What the export tests score with the tiny models, and the type of the `variant` fixture."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

Variant = Callable[..., Path]  # variant(kind, method, **sizes) -> a training output folder (tests/export/conftest.py)

# Short texts fit every limit; the last query and passage are longer than the retriever's (16 / 32 tokens), so an
# export must cut them as peft-ir does.
QUERIES = ["alpha beta gamma", "river stone cloud", "north south east west red blue green black " * 3]
PASSAGES = ["alpha beta gamma delta epsilon", "light metal glass paper water fire",
            "stone cloud tree light metal glass paper water fire earth wind " * 4]
