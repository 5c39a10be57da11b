"""Encoding throughput: peft-ir's BiEncoder vs sentence-transformers' `encode`, and base vs IAA-L adapter.

Same model, same texts (SciFact title+text), same batch size and max length; the variants alternate in rounds
and we report the median docs/s of each and the ratios of medians, all from one run.

    python bench/encode_throughput.py --docs 512 --rounds 5 --output bench/results/encode_throughput.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from itertools import islice
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from machine import describe, publish, time_rounds  # noqa: E402

from peft_ir.data import iter_corpus  # noqa: E402
from peft_ir.models import resolve_model  # noqa: E402
from peft_ir.retriever.config import EncoderSpec  # noqa: E402
from peft_ir.retriever.encoder import BiEncoder  # noqa: E402
from peft_ir.tuning import TuningConfig, apply_tuning  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=str(Path(__file__).resolve().parents[1] / "data" / "scifact"))
    ap.add_argument("--docs", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--output", default=None)
    args = ap.parse_args()

    from sentence_transformers import SentenceTransformer

    texts = [d.joined() for d in islice(iter_corpus(Path(args.corpus) / "corpus.jsonl"), args.docs)]
    st = SentenceTransformer(resolve_model(None), device="cpu")
    st.max_seq_length = args.max_length
    base = BiEncoder(EncoderSpec(passage_max_length=args.max_length), device="cpu")
    tuned = BiEncoder(EncoderSpec(passage_max_length=args.max_length), device="cpu")
    tuned._set_hf_model(apply_tuning(tuned.hf_model, TuningConfig(method="iaa-l", r=12, ar=12)))
    tuned.model.eval()

    variants = {
        "sentence-transformers encode": lambda: st.encode(texts, batch_size=args.batch_size, convert_to_numpy=True),
        "peft-ir BiEncoder (base)": lambda: base.encode_passages(texts, batch_size=args.batch_size),
        "peft-ir BiEncoder + IAA-L r=12 ar=12": lambda: tuned.encode_passages(texts, batch_size=args.batch_size),
    }
    for fn in variants.values():  # warm-up
        fn()
    times = time_rounds(variants, args.rounds)
    med = {k: len(texts) / statistics.median(v) for k, v in times.items()}
    names = list(variants)
    lines = [
        "# Encoding throughput (docs/s, median of rounds)", "",
        f"Machine: {describe()}", "",
        f"Command: `python bench/encode_throughput.py --docs {args.docs} --batch-size {args.batch_size} "
        f"--max-length {args.max_length} --rounds {args.rounds}`", "",
        f"{len(texts)} SciFact documents (title + text), max length {args.max_length}, batch size {args.batch_size}, "
        f"all-MiniLM-L6-v2 on CPU; variants alternate within each of {args.rounds} rounds.", "",
        "| variant | docs/s (median) | all rounds (s) |", "|---|---:|---|",
    ]
    for k in names:
        lines.append(f"| {k} | {med[k]:.1f} | {', '.join(f'{t:.2f}' for t in times[k])} |")
    lines += ["",
              f"- peft-ir / sentence-transformers: **{med[names[1]] / med[names[0]]:.3f}** (target ≥ 0.95)",
              f"- IAA-L / base: **{med[names[2]] / med[names[1]]:.3f}** "
              f"({(1 - med[names[2]] / med[names[1]]) * 100:.1f} % slower; target ≤ 10 %)", ""]
    text = "\n".join(lines)
    publish(text, args.output)


if __name__ == "__main__":
    main()
