"""Training cost per method against full fine-tuning at the same batch: seconds per step and peak memory (RSS).

One bi-encoder training step as `peft-ir train retriever` takes it: all-MiniLM-L6-v2 (or `--model tiny-qwen3`, a
small random Qwen3 decoder pooled at its last token with EOS appended, as the decoder retriever recipe does) with
the method applied at its budget (`budget_config`, as `--budget`), sentence-transformers'
MultipleNegativesRankingLoss (scale 20) over a batch of queries, positives and one BM25-style negative each,
backward, AdamW over the trainable parameters; with `--gradient-checkpointing on`, each layer recomputed in the
backward pass as `--gradient-checkpointing` makes training do (`both`: every method without and with it). Every
(model, method, checkpointing, round) runs in its own process, so its peak RSS (`ru_maxrss`) is that run's alone;
within each round the processes alternate, and we report the median step time over all rounds' timed steps and the
largest peak RSS. The batch is fixed (the first SciFact training queries with their first positive and a random
other document), so every method does the same work.

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
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

if TYPE_CHECKING:
    import torch

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("full", "bitfit", "prefix", "adapter", "lora", "mam", "iaa-s", "iaa-l", "iaa-m")
UNBUDGETED = ("full", "bitfit")
# The tiny decoder: small enough for the CPU, large enough that its layers (not the embeddings' lookup) do the work.
TINY_QWEN3 = dict(hidden=256, intermediate=768, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=64, max_position_embeddings=512)
MODELS = {
    "minilm": "all-MiniLM-L6-v2",
    "tiny-qwen3": ("a random Qwen3 decoder (hidden 256, 4 layers, 4 heads, 2 key/value heads, intermediate 768; "
                   "MiniLM's vocabulary in a Qwen-like tokenizer), last-token pooling, EOS appended"),
}
CHECKPOINTING = {"off": ("off",), "on": ("on",), "both": ("off", "on")}


def tiny_qwen3(out: Path) -> Path:
    """Save the tiny Qwen3 decoder folder (tests/tiny_models.py's builder, the tests' decoder tokenizer) into `out`."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import save_tiny_decoder  # noqa: PLC0415

    from peft_ir.models import resolve_model  # noqa: PLC0415

    return save_tiny_decoder(out, "qwen3", resolve_model(None), **TINY_QWEN3)


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


def enable_checkpointing(st: Any) -> None:
    """Gradient checkpointing as `--gradient-checkpointing` gets it in training: the Trainer
    (`activation_checkpointing=True`) calls the SentenceTransformer's `gradient_checkpointing_enable`, which enables
    it, non-reentrant, on the tuned transformers model, so every layer, with the tuning hooks inside, is recomputed in
    the backward pass (see peft_ir.training.args.common_trainer_args and tuning.apply_tuning)."""
    with warnings.catch_warnings():  # transformers 5 deprecates the name that sentence-transformers still uses
        warnings.simplefilter("ignore", FutureWarning)
        st.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def mnrl_step(st: Any, texts: tuple[list[str], list[str], list[str]], lr: float,
              dtype: torch.dtype | None = None) -> Callable[[], float]:
    """One training step per call as the Trainer takes it: MultipleNegativesRankingLoss (scale 20) over (queries,
    positives, negatives), each part padded to its longest text, the forward pass and loss under `--bf16`-style
    autocast when `dtype` is given (float32 weights, gradients and AdamW over the trainable parameters); returns
    the loss. Shared with cpu_bf16.py, so both benchmarks time the same step."""
    import torch  # noqa: PLC0415
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss  # noqa: PLC0415

    from peft_ir.precision import autocast  # noqa: PLC0415

    st.train()
    loss_fn = MultipleNegativesRankingLoss(st, scale=20.0)
    opt = torch.optim.AdamW([p for p in st.parameters() if p.requires_grad], lr=lr)
    features = [st.tokenize(part) for part in texts]

    def step() -> float:
        with autocast("cpu", dtype):
            loss = loss_fn(features, None)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())
    return step


def child(args: argparse.Namespace) -> dict[str, Any]:
    """Time `args.steps` steps after one warm-up step of one method on one model; print and return JSON."""
    import torch  # noqa: PLC0415

    from peft_ir.retriever.config import EncoderSpec  # noqa: PLC0415
    from peft_ir.retriever.encoder import BiEncoder  # noqa: PLC0415
    from peft_ir.tuning import TuningConfig, apply_tuning, budget_config, trainable_parameters  # noqa: PLC0415
    from peft_ir.tuning.arch import detect  # noqa: PLC0415

    torch.manual_seed(0)
    encoder = BiEncoder(EncoderSpec(model=args.model_path, passage_max_length=args.max_length), device="cpu")
    st = encoder.model
    st.max_seq_length = args.max_length
    method = args.child
    out: dict[str, Any] = {"method": method, "checkpointing": args.checkpointing, "pooling": encoder.spec.pooling,
                           "append_eos": encoder.spec.append_eos}
    cfg = TuningConfig(method=method) if method in UNBUDGETED else budget_config(encoder.hf_model, method, args.budget)
    encoder._set_hf_model(apply_tuning(encoder.hf_model, cfg))
    trainable, total = trainable_parameters(encoder.hf_model)
    if args.checkpointing == "on":
        enable_checkpointing(st)
    layers = [slots.layer for slots in detect(encoder.hf_model).layers]
    checkpointed = sum(bool(getattr(layer, "gradient_checkpointing", False)) for layer in layers)
    if checkpointed != (len(layers) if args.checkpointing == "on" else 0):
        raise SystemExit(f"{method}: {checkpointed} of {len(layers)} layers checkpointed with checkpointing "
                         f"{args.checkpointing}")
    step = mnrl_step(st, batch(Path(args.data), args.batch_size), lr=1e-5)
    times, first_loss = [], None
    for i in range(args.steps + 1):
        t0 = time.perf_counter()
        loss = step()
        if i:  # the first step allocates the optimizer state and warms the allocator
            times.append(time.perf_counter() - t0)
        else:
            first_loss = loss
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out.update({"trainable": trainable, "total": total, "times": times, "rss_mib": rss_kib / 1024,
                "loss": first_loss, "layers": len(layers), "checkpointed": checkpointed,
                "config": {k: v for k, v in vars(cfg).items() if v is not None}})
    print(json.dumps(out, default=str))
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / "data" / "scifact"))
    ap.add_argument("--model", nargs="+", action="extend", choices=list(MODELS), dest="models",
                    help="minilm (all-MiniLM-L6-v2) and/or tiny-qwen3 (built into a temporary folder); "
                         "default: minilm")
    ap.add_argument("--gradient-checkpointing", choices=list(CHECKPOINTING), default="off",
                    help="both: every method without and with it, side by side")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--budget", default="0.5%")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per process (after one warm-up step)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--output", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model-path", default=None, help=argparse.SUPPRESS)  # the child's model folder (None: MiniLM)
    ap.add_argument("--checkpointing", default="off", choices=("off", "on"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.models = list(dict.fromkeys(args.models or ["minilm"]))
    return args


def command(args: argparse.Namespace) -> str:
    """The command line that repeats this measurement (model and checkpointing only where not the default, so the
    committed default table's command reads as before)."""
    extra = "".join(f" --model {m}" for m in args.models) if args.models != ["minilm"] else ""
    if args.gradient_checkpointing != "off":
        extra += f" --gradient-checkpointing {args.gradient_checkpointing}"
    return (f"python bench/train_step.py{extra} --methods {' '.join(args.methods)} --budget {args.budget} "
            f"--batch-size {args.batch_size} --max-length {args.max_length} --steps {args.steps} "
            f"--rounds {args.rounds}")


Results = dict[tuple[str, str, str], list[dict[str, Any]]]  # (model, method, checkpointing) -> one dict a process


def _sizes(res: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in res["config"].items() if k not in ("method", "seed"))


def method_table(results: Results, model: str, methods: list[str], setting: str) -> list[str]:
    """One model's methods at one checkpointing setting, against full fine-tuning (the first method without it)."""
    runs = {m: results[(model, m, setting)] for m in methods}
    step = {m: statistics.median(t for res in runs[m] for t in res["times"]) for m in methods}
    rss = {m: max(res["rss_mib"] for res in runs[m]) for m in methods}
    ref = "full" if "full" in step else methods[0]
    lines = [f"| method | trainable | share | s/step (median) | vs {ref} | peak RSS (MiB) | vs {ref} | sizes |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for m in methods:
        res = runs[m][0]
        lines.append(f"| {m} | {res['trainable']:,} | {res['trainable'] / res['total']:.2%} | {step[m]:.2f} | "
                     f"{step[m] / step[ref]:.2f} | {rss[m]:,.0f} | {rss[m] / rss[ref]:.2f} | {_sizes(res)} |")
    return lines


def checkpointing_table(results: Results, model: str, methods: list[str]) -> list[str]:
    """One model's methods without and with gradient checkpointing: the checkpointed run against the plain one."""
    lines = ["| method | checkpointing | trainable | share | s/step (median) | on / off | peak RSS (MiB) | on / off "
             "| sizes |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for m in methods:
        runs = {g: results[(model, m, g)] for g in ("off", "on")}
        step = {g: statistics.median(t for res in rs for t in res["times"]) for g, rs in runs.items()}
        rss = {g: max(res["rss_mib"] for res in rs) for g, rs in runs.items()}
        res = runs["off"][0]
        share = f"{res['trainable']:,} | {res['trainable'] / res['total']:.2%}"
        lines.append(f"| {m} | off | {share} | {step['off']:.2f} | | {rss['off']:,.0f} | | {_sizes(res)} |")
        lines.append(f"| {m} | on | {share} | {step['on']:.2f} | {step['on'] / step['off']:.2f} | "
                     f"{rss['on']:,.0f} | {rss['on'] / rss['off']:.2f} | |")
    return lines


def loss_gap(results: Results) -> float:
    """The largest relative difference of the first step's loss with and without checkpointing (recomputation must
    not change what is computed: ~1e-7 in float32)."""
    gaps = [abs(on["loss"] - off["loss"]) / max(abs(off["loss"]), 1e-12)
            for (model, m, g), rs in results.items() if g == "on"
            for on, off in zip(rs, results[(model, m, "off")])]
    return max(gaps, default=0.0)


def render(results: Results, args: argparse.Namespace, machine: str) -> str:
    """The result file: what was measured and how, then one table per model."""
    settings = CHECKPOINTING[args.gradient_checkpointing]
    both = len(settings) == 2
    models = args.models
    on = ("non-reentrant, as `--gradient-checkpointing` enables it in training: every layer, tuning hooks included, "
          "recomputed in the backward pass")
    if both:
        title = "# Gradient checkpointing per method: seconds per step and peak RSS, without and with"
        how = (f"Each method runs without and with gradient checkpointing ({on}), {args.rounds} times each in a fresh "
               f"process ({args.steps} timed steps after a warm-up step), the processes alternating; s/step is the "
               "median over all timed steps, peak RSS the largest over the processes (model, activations, gradients "
               "and optimizer state); on / off divides the checkpointed run's by the plain one's.")
    else:
        title = "# Training cost per method: seconds per step and peak RSS, against full fine-tuning"
        how = (f"Each method runs {args.rounds} times in a fresh process ({args.steps} timed steps after a warm-up "
               "step), the methods alternating; s/step is the median over all timed steps, peak RSS the largest over "
               "the processes (model, activations, gradients and optimizer state).")
        if settings == ("on",):
            how = how.replace("Each method runs", f"With gradient checkpointing ({on}), each method runs")
    on_what = MODELS[models[0]] if len(models) == 1 else "each model below"
    lines = [
        title, "",
        f"Machine: {machine}", "",
        f"Command: `{command(args)}`", "",
        f"One bi-encoder step (MultipleNegativesRankingLoss, backward, AdamW) on {on_what} for a fixed batch of "
        f"{args.batch_size} SciFact training queries + {args.batch_size} positives + {args.batch_size} negatives, "
        f"passages cut at {args.max_length} tokens, each part padded to its longest text; PEFT methods at "
        f"{args.budget} of the base's parameters. {how}",
        "",
    ]
    if both:
        lines += [f"The first step's loss with checkpointing equals the one without to a relative "
                  f"{loss_gap(results):.1e} (largest over all processes).", ""]
    for model in models:
        if len(models) > 1:
            lines += [f"## {model}: {MODELS[model]}", ""]
        lines += (checkpointing_table(results, model, args.methods) if both
                  else method_table(results, model, args.methods, settings[0]))
        if len(models) > 1:
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def measure(args: argparse.Namespace, paths: dict[str, str | None]) -> Results:
    """Run every (model, method, checkpointing) once per round in its own process, alternating within the round."""
    settings = CHECKPOINTING[args.gradient_checkpointing]
    results: Results = {(mo, me, g): [] for mo in args.models for me in args.methods for g in settings}
    for r in range(args.rounds):
        for key in results:
            model, method, setting = key
            cmd = [sys.executable, __file__, "--child", method, "--checkpointing", setting, "--data", args.data,
                   "--budget", args.budget, "--batch-size", str(args.batch_size), "--max-length",
                   str(args.max_length), "--steps", str(args.steps)]
            if paths[model]:
                cmd += ["--model-path", str(paths[model])]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            res = json.loads(out.strip().splitlines()[-1])
            results[key].append(res)
            print(f"round {r + 1}/{args.rounds} {model} {method} checkpointing {setting}: "
                  f"{statistics.median(res['times']):.2f} s/step", file=sys.stderr)
    return results


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child(args)
        return

    from machine import describe, publish  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="train-step-") as tmp:
        paths = {m: None if m == "minilm" else str(tiny_qwen3(Path(tmp) / m)) for m in args.models}
        results = measure(args, paths)
    publish(render(results, args, describe()), args.output)


if __name__ == "__main__":
    main()
