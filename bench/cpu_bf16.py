"""CPU bfloat16 against float32: does `precision: bfloat16` (encode.dtype, rerank --dtype, --bf16) pay on this CPU?

The same all-MiniLM-L6-v2 encodes the same SciFact passages (BiEncoder, max length 256), re-ranks the same pairs
(CrossEncoder, cosine head, 32 + 128 tokens) and, with `--train-batch N` (N > 0), takes one full fine-tuning step
of the bi-encoder as `--bf16` training does (MultipleNegativesRankingLoss over N queries, N positives and N other
passages at 256 tokens, the forward pass under autocast, backward, AdamW) in float32 and under bfloat16 autocast;
the variants alternate within each round and we report medians and the ratio of medians, all from one run, with
whether the CPU computes bfloat16 natively (peft_ir.precision.cpu_native_bf16). oneDNN's ONEDNN_MAX_CPU_ISA (e.g.
AVX512_CORE, AVX2) makes this CPU behave like one without native bfloat16, as the conditions line records.

    python bench/cpu_bf16.py --docs 256 --rounds 5 --output bench/results/cpu_bf16.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from machine import describe, publish, time_rounds  # noqa: E402
from train_step import mnrl_step  # noqa: E402

from peft_ir.data import iter_corpus  # noqa: E402

if TYPE_CHECKING:
    import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=str(Path(__file__).resolve().parents[1] / "data" / "scifact"))
    ap.add_argument("--docs", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--train-batch", type=int, default=0, help="queries per training step (0: no training variant)")
    ap.add_argument("--output", default=None)
    args = ap.parse_args()

    import numpy as np
    import torch

    from peft_ir.precision import cpu_native_bf16
    from peft_ir.reranker.config import CrossEncoderSpec
    from peft_ir.reranker.model import CrossEncoder
    from peft_ir.retriever.config import EncoderSpec
    from peft_ir.retriever.encoder import BiEncoder

    texts = [d.joined() for d in islice(iter_corpus(Path(args.corpus) / "corpus.jsonl"), args.docs)]
    queries = [t.split(".")[0] for t in texts[1:] + texts[:1]]  # another passage's first sentence as its query
    encoders = {name: BiEncoder(EncoderSpec(passage_max_length=256), device="cpu", dtype=dtype)
                for name, dtype in (("float32", None), ("bfloat16", torch.bfloat16))}
    rerankers = {name: CrossEncoder(CrossEncoderSpec(head="cosine", query_max_length=32, passage_max_length=128),
                                    device="cpu", dtype=dtype)
                 for name, dtype in (("float32", None), ("bfloat16", torch.bfloat16))}
    variants: dict[str, Callable[[], object]] = {}
    for name in encoders:
        variants[f"encode, {name}"] = lambda e=encoders[name]: e.encode_passages(texts, batch_size=args.batch_size)
    for name in rerankers:
        variants[f"re-rank, {name}"] = lambda r=rerankers[name]: r.score(queries, texts, batch_size=args.batch_size)
    if args.train_batch > 0:
        n = args.train_batch
        if len(texts) < 2 * n:
            raise SystemExit(f"--train-batch {n} needs --docs >= {2 * n}")
        batch = (queries[:n], texts[:n], texts[n:2 * n])
        for name, dtype in (("float32", None), ("bfloat16", torch.bfloat16)):
            variants[f"train step, {name}"] = training_step(batch, dtype)
    out = {k: fn() for k, fn in variants.items()}  # warm-up, and the outputs compared below
    times = time_rounds(variants, args.rounds)
    med = {k: statistics.median(v) for k, v in times.items()}
    cos = float(np.min(np.sum(out["encode, float32"] * out["encode, bfloat16"], axis=1)))
    gap = float(np.max(np.abs(np.array(out["re-rank, float32"]) - np.array(out["re-rank, bfloat16"]))))
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    lines = [
        "# CPU bfloat16 against float32 (seconds per pass, median of rounds)", "",
        f"Machine: {describe()}; native bfloat16: {'yes' if cpu_native_bf16() else 'no'}"
        + (f"; oneDNN limited to ONEDNN_MAX_CPU_ISA={isa}" if isa else ""), "",
        f"Command: `{'ONEDNN_MAX_CPU_ISA=' + isa + ' ' if isa else ''}python bench/cpu_bf16.py --docs {args.docs} "
        f"--batch-size {args.batch_size} --rounds {args.rounds}"
        + (f" --train-batch {args.train_batch}" if args.train_batch > 0 else "") + "`", "",
        f"{len(texts)} SciFact passages (title + text): encoded at max length 256, and re-ranked as {len(texts)} pairs "
        f"(cosine head, 32 + 128 tokens), batch size {args.batch_size}, all-MiniLM-L6-v2"
        + (f"; one full fine-tuning step of the bi-encoder on {args.train_batch} queries + {args.train_batch} "
           f"positives + {args.train_batch} other passages (max length 256)" if args.train_batch > 0 else "")
        + f"; variants alternate within each of {args.rounds} rounds.", "",
        "| variant | s (median) | all rounds (s) |", "|---|---:|---|",
    ]
    for k in variants:
        lines.append(f"| {k} | {med[k]:.2f} | {', '.join(f'{t:.2f}' for t in times[k])} |")
    lines += ["",
              f"- encode, float32 / bfloat16 time: **{med['encode, float32'] / med['encode, bfloat16']:.2f}x**; "
              f"lowest cosine between a passage's two vectors {cos:.5f}",
              f"- re-rank, float32 / bfloat16 time: **{med['re-rank, float32'] / med['re-rank, bfloat16']:.2f}x**; "
              f"largest score difference {gap:.4f} (scores are 20 x a cosine)"]
    if args.train_batch > 0:
        lines.append(f"- train step, float32 / bfloat16 time: "
                     f"**{med['train step, float32'] / med['train step, bfloat16']:.2f}x**")
    lines.append("")
    publish("\n".join(lines), args.output)


def training_step(batch: tuple[list[str], list[str], list[str]], dtype: torch.dtype | None) -> Callable[[], float]:
    """One full fine-tuning step of a fresh MiniLM bi-encoder per call (train_step.py's step, autocast when `dtype`)."""
    import torch

    from peft_ir.retriever.config import EncoderSpec
    from peft_ir.retriever.encoder import BiEncoder

    torch.manual_seed(0)
    st = BiEncoder(EncoderSpec(passage_max_length=256), device="cpu").model
    st.max_seq_length = 256
    return mnrl_step(st, batch, lr=2e-5, dtype=dtype)


if __name__ == "__main__":
    main()
