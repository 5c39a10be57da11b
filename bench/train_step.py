"""Training cost per method against full fine-tuning at the same batch: seconds per step and peak memory (RSS).

One bi-encoder training step as `peft-ir train retriever` takes it: all-MiniLM-L6-v2 with the method applied at
its budget (`budget_config`, as `--budget`), sentence-transformers' MultipleNegativesRankingLoss (scale 20) over a
batch of queries, positives and one BM25-style negative each, backward, AdamW over the trainable parameters. Every
(method, round) runs in its own process, so its peak RSS (`ru_maxrss`) is that method's alone; the methods alternate
within each round and we report the median step time over all rounds' timed steps and the largest peak RSS.
The batch is fixed (the first SciFact training queries with their first positive and a random other document), so
every method does the same work.

    python bench/train_step.py --rounds 3 --steps 5 --output bench/results/train_step.md
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("full", "bitfit", "prefix", "adapter", "lora", "mam", "iaa-s", "iaa-l", "iaa-m")
UNBUDGETED = ("full", "bitfit")


def batch(data: Path, size: int) -> tuple[list[str], list[str], list[str]]:
    from peft_ir.data import BeirDataset, load_corpus  # noqa: PLC0415

    ds = BeirDataset(data, "train")
    corpus = load_corpus(data / "corpus.jsonl")
    docids = sorted(corpus)
    rng = random.Random(0)
    queries, qrels = ds.queries(), ds.qrels()
    q, p, n = [], [], []
    for qid in sorted(qrels)[:size]:
        pos = sorted(d for d, g in qrels[qid].items() if g > 0)[0]
        q.append(queries[qid])
        p.append(corpus[pos].joined())
        n.append(corpus[rng.choice(docids)].joined())
    return q, p, n


def child(args: argparse.Namespace) -> None:
    """Time `args.steps` steps after one warm-up step of one method; print JSON."""
    import torch  # noqa: PLC0415
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss  # noqa: PLC0415

    from peft_ir.retriever.config import EncoderSpec  # noqa: PLC0415
    from peft_ir.retriever.encoder import BiEncoder  # noqa: PLC0415
    from peft_ir.tuning import TuningConfig, apply_tuning, budget_config, trainable_parameters  # noqa: PLC0415

    torch.manual_seed(0)
    encoder = BiEncoder(EncoderSpec(passage_max_length=args.max_length), device="cpu")
    st = encoder.model
    st.max_seq_length = args.max_length
    method = args.child
    cfg = (TuningConfig(method=method) if method in UNBUDGETED
           else budget_config(encoder.hf_model, method, args.budget))
    encoder._set_hf_model(apply_tuning(encoder.hf_model, cfg))
    trainable, total = trainable_parameters(encoder.hf_model)
    st.train()
    loss_fn = MultipleNegativesRankingLoss(st, scale=20.0)
    params = [p for p in st.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    q, p, n = batch(Path(args.data), args.batch_size)
    features = [st.tokenize(texts) for texts in (q, p, n)]  # padded to each part's longest text, as in training
    times = []
    for i in range(args.steps + 1):
        t0 = time.perf_counter()
        loss = loss_fn(features, None)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:  # the first step allocates the optimizer state and warms the allocator
            times.append(time.perf_counter() - t0)
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"method": method, "trainable": trainable, "total": total, "times": times,
                      "rss_mib": rss_kib / 1024, "config": {k: v for k, v in vars(cfg).items() if v is not None}},
                     default=str))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / "data" / "scifact"))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--budget", default="0.5%")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per process (after one warm-up step)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--output", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return

    from machine import describe, publish  # noqa: PLC0415

    results: dict[str, list[dict]] = {m: [] for m in args.methods}
    for r in range(args.rounds):
        for m in args.methods:
            cmd = [sys.executable, __file__, "--child", m, "--data", args.data, "--budget", args.budget,
                   "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
                   "--steps", str(args.steps)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results[m].append(json.loads(out.strip().splitlines()[-1]))
            print(f"round {r + 1}/{args.rounds} {m}: {statistics.median(results[m][-1]['times']):.2f} s/step",
                  file=sys.stderr)

    step = {m: statistics.median(t for res in rs for t in res["times"]) for m, rs in results.items()}
    rss = {m: max(res["rss_mib"] for res in rs) for m, rs in results.items()}
    ref = "full" if "full" in step else args.methods[0]
    cmd = (f"python bench/train_step.py --methods {' '.join(args.methods)} --budget {args.budget} "
           f"--batch-size {args.batch_size} --max-length {args.max_length} --steps {args.steps} --rounds {args.rounds}")
    lines = [
        "# Training cost per method: seconds per step and peak RSS, against full fine-tuning", "",
        f"Machine: {describe()}", "",
        f"Command: `{cmd}`", "",
        f"One bi-encoder step (MultipleNegativesRankingLoss, backward, AdamW) on all-MiniLM-L6-v2 for a fixed batch of "
        f"{args.batch_size} SciFact training queries + {args.batch_size} positives + {args.batch_size} negatives, "
        f"passages cut at {args.max_length} tokens, each part padded to its longest text; PEFT methods at "
        f"{args.budget} of the base's parameters. Each method runs {args.rounds} times in a fresh process "
        f"({args.steps} timed steps after a warm-up step), the methods alternating; s/step is the median over all "
        "timed steps, peak RSS the largest over the processes (model, activations, gradients and optimizer state).",
        "",
        f"| method | trainable | share | s/step (median) | vs {ref} | peak RSS (MiB) | vs {ref} | sizes |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for m in args.methods:
        res = results[m][0]
        sizes = ", ".join(f"{k}={v}" for k, v in res["config"].items() if k not in ("method", "seed"))
        lines.append(f"| {m} | {res['trainable']:,} | {res['trainable'] / res['total']:.2%} | {step[m]:.2f} | "
                     f"{step[m] / step[ref]:.2f} | {rss[m]:,.0f} | {rss[m] / rss[ref]:.2f} | {sizes} |")
    text = "\n".join(lines) + "\n"
    publish(text, args.output)


if __name__ == "__main__":
    main()
