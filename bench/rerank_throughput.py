"""Re-ranking throughput (pairs/s) of the base cross-encoder vs with an IAA-L adapter vs with LoRA (unmerged and
merged), side by side in one process: the same pairs (DL19 BM25 top hits), alternating rounds, medians, ratios.

    .venv/bin/python bench/rerank_throughput.py                       # writes bench/results/rerank_throughput.md
    .venv/bin/python bench/rerank_throughput.py --pairs 2000 --rounds 7 --passage-max-length 192
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
DL19 = REPO.parent / "shared" / "data" / "trec-dl-2019"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="base encoder (default all-MiniLM-L6-v2)")
    ap.add_argument("--pairs", type=int, default=384)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--query-max-length", type=int, default=32)
    ap.add_argument("--passage-max-length", type=int, default=192)
    ap.add_argument("--budget", default="0.5%")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--output", default=str(REPO / "bench" / "results" / "rerank_throughput.md"))
    args = ap.parse_args()

    import torch

    from machine import describe, publish
    from peft_ir.reranker.config import CrossEncoderSpec
    from peft_ir.reranker.model import CrossEncoder
    from peft_ir.reranker.rerank import load_inputs
    from peft_ir.tuning import apply_tuning, budget_config, merge_tuned, trainable_parameters

    if args.threads:
        torch.set_num_threads(args.threads)
    run, topics, passages = load_inputs(DL19 / "runs" / "bm25_top100.dl19.trec", DL19 / "queries.tsv",
                                        DL19 / "corpus.jsonl", hits=100)
    pairs = [(topics[q], passages[d]) for q, hits in run.items() for d in sorted(hits)][: args.pairs]
    qs, ps = [p[0] for p in pairs], [p[1] for p in pairs]
    spec = CrossEncoderSpec(model=args.model, query_max_length=args.query_max_length,
                            passage_max_length=args.passage_max_length)

    systems: dict[str, CrossEncoder] = {"base": CrossEncoder(spec)}
    shares = {"base": 0.0}
    for method in ("iaa-l", "lora"):
        ce = CrossEncoder(spec)
        apply_tuning(ce.model, budget_config(ce.model, method, args.budget))
        ce.model.eval()
        systems[method] = ce
        t, total = trainable_parameters(ce.model)
        shares[method] = t / total
    merged = CrossEncoder(spec)
    apply_tuning(merged.model, budget_config(merged.model, "lora", args.budget))
    merged.model = merge_tuned(merged.model).eval()
    systems["lora (merged)"] = merged
    shares["lora (merged)"] = shares["lora"]

    tokens = sum(len(ids) for ids, _, _ in systems["base"].pair_ids(qs, ps))
    for ce in systems.values():  # warm-up
        ce.score(qs[: args.batch_size], ps[: args.batch_size], args.batch_size)
    times: dict[str, list[float]] = {k: [] for k in systems}
    for r in range(args.rounds):
        order = list(systems) if r % 2 == 0 else list(reversed(systems))  # alternate to cancel drift
        for name in order:
            t0 = time.perf_counter()
            systems[name].score(qs, ps, args.batch_size)
            times[name].append(time.perf_counter() - t0)
        print(f"round {r + 1}: " + ", ".join(f"{k} {len(pairs) / times[k][-1]:.1f} pairs/s" for k in systems), flush=True)

    base_med = statistics.median(times["base"])
    lines = ["# Cross-encoder re-ranking throughput", "", describe(), "",
             f"{len(pairs)} (query, passage) pairs from the DL19 BM25 top-100 run, {tokens:,} tokens "
             f"(query <= {args.query_max_length}, passage <= {args.passage_max_length} tokens), batch size "
             f"{args.batch_size}, length-sorted batches padded to their longest pair; {args.rounds} alternating "
             f"rounds, median wall time per round. PEFT budget {args.budget} (trainable share counts the head).", "",
             "| system | trainable | median s | pairs/s | pairs/s range | tokens/s | time vs base |",
             "|---|---|---|---|---|---|---|"]
    for name, ts in times.items():
        med = statistics.median(ts)
        lo, hi = len(pairs) / max(ts), len(pairs) / min(ts)
        lines.append(f"| {name} | {shares[name]:.3%} | {med:.2f} | {len(pairs) / med:.1f} | {lo:.1f}-{hi:.1f} | "
                     f"{tokens / med:,.0f} | {med / base_med:.2f}x |")
    lines += ["", "The CPU is shared with other developers' jobs: compare the medians and ratios, not single rounds. "
              "IAA-L adds two adapters and one aside module per layer (not mergeable); LoRA unmerged adds low-rank "
              "products on q/v; merged LoRA is the base architecture.", ""]
    lines += [f"Command: `.venv/bin/python bench/rerank_throughput.py {' '.join(sys.argv[1:])}`".rstrip() + "",
              ""]
    publish("\n".join(lines), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
