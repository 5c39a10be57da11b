"""How close float32 encoding runs to this CPU's own matrix-multiply rate (is `make run` compute-bound here?).

Two measurements side by side, alternating in rounds: (1) torch's float32 matrix products at the shapes of
all-MiniLM-L6-v2's linear layers for one encoding batch (the q, k, v and output projections, the FFN's two), as
GFLOP/s; (2) the peft-ir BiEncoder encoding SciFact abstracts, its FLOPs counted from the model's shapes over the
padded tokens it actually computes (linear layers 2·(4d² + 2·d·d_ff) per token and layer, attention 4·L·d), as
GFLOP/s. Their ratio says how much a faster runtime could still win: near 1, only less work or a faster CPU would
shorten the job.

    python bench/cpu_roofline.py --docs 256 --rounds 5 --output bench/results/cpu_roofline.md
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
from peft_ir.retriever.config import EncoderSpec  # noqa: E402
from peft_ir.retriever.encoder import BiEncoder  # noqa: E402


def batches(encoder: BiEncoder, texts: list[str], batch_size: int, max_length: int) -> list[tuple[int, int]]:
    """(texts, padded length) of each batch when encoding `texts` in sentence-transformers' order (longest input
    first, by its own length measure)."""
    ordered = sorted(texts, key=lambda t: -encoder.model._input_length(t))
    lengths = [len(ids) for ids in encoder.model.tokenizer(ordered, truncation=True, max_length=max_length)
               ["input_ids"]]
    return [(len(lengths[i:i + batch_size]), max(lengths[i:i + batch_size]))
            for i in range(0, len(lengths), batch_size)]


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=str(Path(__file__).resolve().parents[1] / "data" / "scifact"))
    ap.add_argument("--docs", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--output", default=None)
    args = ap.parse_args()

    texts = [d.joined() for d in islice(iter_corpus(Path(args.corpus) / "corpus.jsonl"), args.docs)]
    encoder = BiEncoder(EncoderSpec(passage_max_length=args.max_length), device="cpu")
    config = encoder.hf_model.config
    d, d_ff, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    shapes = batches(encoder, texts, args.batch_size, args.max_length)
    padded = sum(n * length for n, length in shapes)
    encode_flops = layers * sum(n * length * (2 * (4 * d * d + 2 * d * d_ff) + 4 * length * d) for n, length in shapes)

    rows = args.batch_size * args.max_length  # one full batch of tokens through every linear layer of the model
    x, h = torch.randn(rows, d), torch.randn(rows, d_ff)
    w_dd, w_up, w_down = torch.randn(d, d), torch.randn(d_ff, d), torch.randn(d, d_ff)
    linear = torch.nn.functional.linear

    def matmuls() -> None:
        with torch.inference_mode():
            for _ in range(layers):
                for _ in range(4):
                    linear(x, w_dd)
                linear(x, w_up)
                linear(h, w_down)

    matmul_flops = layers * rows * 2 * (4 * d * d + 2 * d * d_ff)
    variants = {
        "float32 matrix products, MiniLM's linear shapes (one batch)": matmuls,
        f"BiEncoder.encode_passages ({len(texts)} abstracts)":
            lambda: encoder.encode_passages(texts, batch_size=args.batch_size),
    }
    for fn in variants.values():  # warm-up
        fn()
    times = time_rounds(variants, args.rounds)
    names = list(variants)
    rate = {names[0]: matmul_flops / statistics.median(times[names[0]]) / 1e9,
            names[1]: encode_flops / statistics.median(times[names[1]]) / 1e9}
    lines = [
        "# Float32 encoding against this CPU's matrix-multiply rate", "",
        f"Machine: {describe()}", "",
        f"Command: `python bench/cpu_roofline.py --docs {args.docs} --batch-size {args.batch_size} "
        f"--max-length {args.max_length} --rounds {args.rounds}`", "",
        f"all-MiniLM-L6-v2 (d {d}, FFN {d_ff}, {layers} layers), threads {torch.get_num_threads()}; {len(texts)} "
        f"SciFact abstracts (title + text), max length {args.max_length}, batch size {args.batch_size}: "
        f"{padded:,} tokens computed with padding (batches sorted by length); the matrix products run "
        f"{rows:,} rows ({args.batch_size} x {args.max_length}) through each linear layer once. Variants alternate "
        f"within each of {args.rounds} rounds; GFLOP/s from the median.", "",
        "| variant | GFLOP (counted) | GFLOP/s (median) | all rounds (s) |", "|---|---:|---:|---|",
    ]
    for name, flops in zip(names, (matmul_flops, encode_flops)):
        lines.append(f"| {name} | {flops / 1e9:.1f} | {rate[name]:.1f} | "
                     f"{', '.join(f'{t:.2f}' for t in times[name])} |")
    lines += ["", f"- encoding / matrix products: **{rate[names[1]] / rate[names[0]]:.2f}** of this CPU's float32 "
              "matrix-multiply rate, counting only the linear layers' and attention's products (softmax, layer "
              "norms, GELU and tokenisation are the rest of the time)", ""]
    publish("\n".join(lines), args.output)


if __name__ == "__main__":
    main()
