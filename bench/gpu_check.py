"""The GPU check (issue #20): every GPU path of peft-ir run once on a real CUDA GPU, with measured numbers.

Each step checks one thing and records PASS, FAIL (with the last line of its error) or SKIP, with what it measured;
a failing step does not stop the others. The report (a markdown table, with the machine and the command) is
rewritten after every step, so a check cut short still leaves what it did. CUDA only, no network; sized for under 12
minutes on one large GPU (247 s on an H200, 2026-12-04). The process uses one GPU (the first visible one);
only the torchrun step launches on two.

    make gpu-check                                   # = the line below, after `make install FAISS=gpu`
    python bench/gpu_check.py --output bench/results/gpu_check.md
    python bench/gpu_check.py --only env faiss-types --output runs/gpu-check/some.md
    python bench/gpu_check.py --list

Exit codes: 0 every step passed or was skipped, 1 a step failed, 2 bad arguments, 3 no CUDA GPU (nothing is run or
written).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import math
import os
import platform
import random
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from machine import write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCIFACT = ROOT / "data" / "scifact"
DEFAULT_OUTPUT = ROOT / "bench" / "results" / "gpu_check.md"
DEFAULT_WORK = ROOT / "runs" / "gpu-check"
PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
DEVICE = "cuda"             # where the steps compute (the GPU this process pinned)
EXIT_FAILED, EXIT_NO_CUDA = 1, 3
TOLERANCE = 1e-4            # CUDA fp32 against CPU: largest difference, relative to max(1, largest CPU value)
MIN_COSINE = 0.999          # fp16 / bf16 embeddings against fp32
ZERO_SHOT_NDCG = 0.6451     # SciFact test, untrained all-MiniLM-L6-v2, the committed CPU figure (README)
NDCG_SLACK = 0.01
TRAINED_METHODS = ("iaa-l", "lora", "prefix")
FAISS_VECTORS = 100_000     # synthetic corpus of the FAISS steps (dimension 384, as MiniLM)
EXACT_VECTORS = 2_000_000   # the torch exact search step's corpus
# every registered method, and aside modules / a trained pooler on other base methods (as tests/tuning)
VARIANTS: tuple[dict[str, Any], ...] = tuple(
    {"method": m} for m in ("full", "bitfit", "adapter", "parallel", "prefix", "lora", "mam", "iaa-s", "iaa-l",
                            "iaa-m")
) + ({"method": "lora", "aside": "layer"}, {"method": "bitfit", "aside": "sublayer"},
     {"method": "adapter", "train_pooler": True})


class Skip(Exception):
    """A step that cannot run on this machine (recorded as SKIP with this reason)."""


class CheckFailed(Exception):
    """A measured value outside what the step requires."""


def require(ok: bool, message: str) -> None:
    if not ok:
        raise CheckFailed(message)


@dataclass
class Context:
    """What every step may use: the arguments and a scratch folder of its own."""

    steps: int                           # training steps per trainer and method
    work: Path
    original_visible: str | None = None  # CUDA_VISIBLE_DEVICES before this process pinned one GPU (torchrun's)

    def scratch(self, name: str) -> Path:
        """An empty folder for one step (a rerun starts afresh: training would otherwise resume)."""
        path = self.work / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path


@dataclass
class Step:
    name: str
    checks: str                          # what the step verifies, as the report's second column
    run: Callable[[Context, dict[str, Any]], None]


@dataclass
class StepResult:
    name: str
    checks: str
    status: str
    numbers: dict[str, Any] = field(default_factory=dict)
    note: str = ""                       # FAIL: the error's last line; SKIP: why
    seconds: float = 0.0


STEPS: dict[str, Step] = {}


def step(name: str, checks: str) -> Callable[[Callable[[Context, dict[str, Any]], None]], Callable[..., None]]:
    """Register a step: `fn(ctx, out)` writes what it measures into `out` and raises on a failed check."""
    def register(fn: Callable[[Context, dict[str, Any]], None]) -> Callable[..., None]:
        STEPS[name] = Step(name, checks, fn)
        return fn
    return register


# ---------------------------------------------------------------------------------------------------------------
# Where this check meets the dense-search API. Issue #20 items 2-4 and 8 (faiss-gpu cloner options, CPU fallback,
# k > 2048, tiled torch exact search) are reworked on branch fix/gpu-index: one small function per use, so that
# adapting to the merged API is a change here only.
# ---------------------------------------------------------------------------------------------------------------

def open_index(path: Path, device: str) -> Any:
    """A loaded index on `device` (auto|cpu|cuda): DenseIndex(path, device=...), as on main and fix/gpu-index."""
    from peft_ir.indexing.dense import DenseIndex  # noqa: PLC0415

    return DenseIndex(path, device=device)


def index_backend(index: Any) -> str:
    """Where a loaded index searches ("faiss-gpu x1", "faiss-cpu", "torch-cuda ...")."""
    return str(getattr(index, "backend", "?"))


def torch_exact_search(index: Any, fp16: bool, tile_bytes: int) -> Any:
    """fix/gpu-index's TorchExactSearch over a FAISS Flat index on GPU 0 (float16 storage when `fp16`), whose
    `search(queries, k)` gives (scores, rows). Main has no tiled search: DenseIndex there copies the whole matrix."""
    import torch  # noqa: PLC0415

    from peft_ir.indexing import dense  # noqa: PLC0415

    cls = getattr(dense, "TorchExactSearch", None)
    if cls is None:
        raise CheckFailed("this build has no tiled torch exact search (peft_ir.indexing.dense.TorchExactSearch, "
                          "issue #20 item 4)")
    return cls(index, [torch.device(DEVICE)], dtype=torch.float16 if fp16 else None, tile_bytes=tile_bytes)


# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------

def error_line(exc: BaseException) -> str:
    """The last non-empty line of an exception as Python prints it ("RuntimeError: ...")."""
    lines = [line.strip() for part in traceback.format_exception_only(type(exc), exc) for line in part.splitlines()]
    lines = [line for line in lines if line]
    return lines[-1] if lines else type(exc).__name__


def first_visible_gpu(value: str | None) -> str | None:
    """The CUDA_VISIBLE_DEVICES value that keeps only the first GPU of `value` (None: unset = all GPUs), or None
    when `value` hides every GPU (then there is nothing to pin)."""
    if value is None:
        return "0"
    first = value.split(",")[0].strip()
    return None if first in ("", "-1") else first


def pin_one_gpu() -> str | None:
    """Make this process see one GPU (before torch starts CUDA): one-process training refuses several GPUs, and the
    check is of one GPU. Returns the previous value for the torchrun step."""
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    first = first_visible_gpu(before)
    if first is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = first
    return before


def cuda_available(visible: str | None = None) -> tuple[bool, str]:
    """(whether torch can use a CUDA GPU, why not); `visible`: the user's CUDA_VISIBLE_DEVICES, for the message."""
    import torch  # noqa: PLC0415

    from peft_ir.devices import driver_gpus  # noqa: PLC0415

    if torch.cuda.is_available():
        return True, ""
    gpus = driver_gpus()
    build = f"torch {torch.__version__} (CUDA {torch.version.cuda or 'none: a CPU build'})"
    if gpus:
        return False, (f"the NVIDIA driver lists {len(gpus)} GPU(s) but {build} cannot use them: install the build "
                       "for your driver, `make clean && make install FAISS=gpu TORCH=cu126` (or cu128)")
    return False, f"{build} sees no CUDA GPU (CUDA_VISIBLE_DEVICES={visible!r}, no NVIDIA driver GPU listed)"


def driver_version() -> str:
    smi = shutil.which("nvidia-smi")
    if smi:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            done = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                                  text=True, timeout=20, check=False)
            if done.returncode == 0 and done.stdout.strip():
                return done.stdout.splitlines()[0].strip()
    with contextlib.suppress(OSError, StopIteration):
        text = Path("/proc/driver/nvidia/version").read_text()
        return next(w for w in text.split() if w[:1].isdigit() and "." in w)
    return "unknown"


def machine_facts() -> dict[str, str]:
    """The machine as the report names it: GPU, driver, torch/CUDA, faiss, CPU cores, Python."""
    import torch  # noqa: PLC0415

    from peft_ir.devices import driver_gpus, usable_cpus  # noqa: PLC0415

    facts = {"GPU": "none visible to torch", "GPUs on the machine": str(len(driver_gpus())),
             "driver": driver_version(), "torch": f"{torch.__version__} (CUDA {torch.version.cuda or 'none'})"}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        facts["GPU"] = f"{props.name}, {props.total_memory / 2**30:.0f} GiB, compute {props.major}.{props.minor}"
    try:
        import faiss  # noqa: PLC0415

        build = (f"GPU build, sees {faiss.get_num_gpus()} GPU(s)" if hasattr(faiss, "StandardGpuResources")
                 else "CPU build")
        facts["faiss"] = f"{faiss.__version__} ({build})"
    except ImportError:
        facts["faiss"] = "not installed"
    facts["CPU cores"] = str(usable_cpus())
    facts["Python"] = platform.python_version()
    return facts


@contextlib.contextmanager
def captured_logs(level: int = logging.INFO) -> Iterator[list[logging.LogRecord]]:
    """The records peft_ir logs at `level` or above while the block runs."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger, handler = logging.getLogger("peft_ir"), Keep(level)
    old = logger.level
    logger.setLevel(min(level, old) if old else level)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


@contextlib.contextmanager
def wrapped(owner: Any, name: str, around: Callable[..., Any]) -> Iterator[None]:
    """Replace owner.name by around(original) for the block (to count or record calls); an inherited attribute
    (a torch.Tensor method) is removed again rather than set on `owner`."""
    own, original = name in vars(owner), getattr(owner, name)
    setattr(owner, name, around(original))
    try:
        yield
    finally:
        if own:
            setattr(owner, name, original)
        else:
            delattr(owner, name)


def synchronize() -> None:
    import torch  # noqa: PLC0415

    torch.cuda.synchronize()


def gpu_name() -> str:
    import torch  # noqa: PLC0415

    return torch.cuda.get_device_name(0)


def scifact_documents(limit: int | None = None) -> list[Any]:
    """SciFact's corpus (peft_ir.data.Document), in file order."""
    from itertools import islice  # noqa: PLC0415

    from peft_ir.data import iter_corpus  # noqa: PLC0415

    return list(islice(iter_corpus(SCIFACT / "corpus.jsonl"), limit))


def scifact_docs(limit: int | None = None) -> list[tuple[str, str]]:
    """(docid, title + text) of SciFact's corpus, in file order."""
    return [(d.id, d.joined()) for d in scifact_documents(limit)]


def scifact_pairs(per_query: int, split: str = "test", seed: int = 0
                  ) -> tuple[dict[str, dict[str, float]], dict[str, str], dict[str, str]]:
    """(run, topics, passages): each query's judged documents, then seeded random others, `per_query` in all."""
    from peft_ir.data import BeirDataset  # noqa: PLC0415

    ds = BeirDataset(SCIFACT, split)
    topics, qrels = ds.queries(), ds.qrels()
    passages = dict(scifact_docs())
    docids = sorted(passages)
    rng = random.Random(seed)
    run: dict[str, dict[str, float]] = {}
    for qid in sorted(qrels):
        chosen = [d for d in qrels[qid] if d in passages][:per_query]
        while len(chosen) < per_query:
            d = rng.choice(docids)
            if d not in chosen:
                chosen.append(d)
        run[qid] = {d: float(per_query - i) for i, d in enumerate(chosen)}
    return run, {q: topics[q] for q in run}, passages


def write_embeddings(folder: Path, vectors: Any, chunk: int = 50_000) -> None:
    """Vectors as `peft-ir encode` writes them (chunks + manifest), docids d0, d1, ... (build_index's input)."""
    import numpy as np  # noqa: PLC0415

    (folder / "chunks").mkdir(parents=True)
    for k, start in enumerate(range(0, len(vectors), chunk)):
        part = vectors[start:start + chunk]
        np.savez(folder / "chunks" / f"chunk-{k:06d}.npz", embeddings=part,
                 ids=np.array([f"d{i}" for i in range(start, start + len(part))]))
    manifest = {"model": "synthetic", "dim": int(vectors.shape[1]), "fingerprint": "synthetic",
                "num_docs": len(vectors), "num_chunks": math.ceil(len(vectors) / chunk), "chunk_size": chunk,
                "dtype": "float32"}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def clustered_vectors(n: int, dim: int, seed: int, clusters: int = 1000) -> Any:
    """Unit vectors around `clusters` centres (made on the GPU: fast), float32 numpy: neighbours are meaningful,
    unlike uniform noise, so approximate indexes can be judged."""
    import torch  # noqa: PLC0415

    g = torch.Generator(device=DEVICE).manual_seed(seed)
    centres = torch.randn(clusters, dim, device=DEVICE, generator=g)
    which = torch.randint(0, clusters, (n,), device=DEVICE, generator=g)
    x = centres[which] + 0.6 * torch.randn(n, dim, device=DEVICE, generator=g)
    return torch.nn.functional.normalize(x, dim=1).cpu().numpy()


def rows_of(docids: Sequence[Sequence[str]]) -> list[list[int]]:
    return [[int(d[1:]) for d in ids] for ids in docids]


def ranking_gap(base: Any, queries: Any, rows_a: Sequence[Sequence[int]], rows_b: Sequence[Sequence[int]]
                ) -> tuple[float, float]:
    """How far ranking a is from ranking b of the same exact search: (largest difference between the exact
    (float64) scores at equal ranks, share of ranks holding the same document). Two exact searches agree up to
    near-ties when the first is tiny, whatever order they give tied documents; lists of unequal length give inf."""
    import numpy as np  # noqa: PLC0415

    gap, same, total = 0.0, 0, 0
    for q, a, b in zip(queries, rows_a, rows_b):
        if len(a) != len(b):
            return math.inf, 0.0
        qa = base[np.asarray(a)].astype(np.float64) @ q.astype(np.float64)
        qb = base[np.asarray(b)].astype(np.float64) @ q.astype(np.float64)
        gap = max(gap, float(np.abs(qa - qb).max(initial=0.0)))
        same += int(sum(x == y for x, y in zip(a, b)))
        total += len(a)
    return gap, same / max(total, 1)


def overlap(rows_a: Sequence[Sequence[Any]], rows_b: Sequence[Sequence[Any]], k: int) -> float:
    """Mean share of the top k that two rankings have in common."""
    shares = [len(set(a[:k]) & set(b[:k])) / k for a, b in zip(rows_a, rows_b)]
    return sum(shares) / max(len(shares), 1)


def relative_gap(a: Any, b: Any) -> float:
    """max |a - b| / max(1, max |b|): TOLERANCE applies to this."""
    return float((a.float() - b.float()).abs().max()) / max(1.0, float(b.float().abs().max()))


def read_trainer_log(path: Path) -> list[dict[str, Any]]:
    from peft_ir.training.logging import read_metrics  # noqa: PLC0415

    return read_metrics(path)


# ---------------------------------------------------------------------------------------------------------------
# The steps, in the order they run
# ---------------------------------------------------------------------------------------------------------------

@step("env", "torch and faiss see the GPU and compute on it; versions, driver")
def check_env(ctx: Context, out: dict[str, Any]) -> None:
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415

    out["GPU"] = gpu_name()
    out["torch"] = f"{torch.__version__} (CUDA {torch.version.cuda})"
    out["driver"] = driver_version()
    out["bf16"] = torch.cuda.is_bf16_supported()
    x = torch.arange(256, device=DEVICE, dtype=torch.float32)  # partial sums exact in float32
    require(float(x @ x) == float(sum(i * i for i in range(256))), "torch computed a wrong dot product on the GPU")
    try:
        import faiss  # noqa: PLC0415
    except ImportError:
        raise CheckFailed("faiss is not installed: make install FAISS=gpu") from None
    out["faiss"] = faiss.__version__
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    out["faiss GPUs"] = gpus
    require(gpus >= 1, "faiss sees no GPU (a faiss-cpu install?): `make clean && make install FAISS=gpu`")
    rng = np.random.default_rng(0)
    base, queries = rng.standard_normal((2000, 64), dtype=np.float32), rng.standard_normal((8, 64), dtype=np.float32)
    cpu = faiss.IndexFlatIP(64)
    cpu.add(base)
    gpu = faiss.index_cpu_to_all_gpus(cpu)
    _, want = cpu.search(queries, 10)
    _, got = gpu.search(queries, 10)
    out["faiss GPU = CPU (top 10)"] = float((want == got).mean())
    require(overlap(got.tolist(), want.tolist(), 10) == 1.0, "faiss-gpu Flat search differs from faiss-cpu")


@step("device-logs", "(a) each stage logs the GPU it runs on: encoding, training, re-ranking, search")
def check_device_logs(ctx: Context, out: dict[str, Any]) -> None:
    from peft_ir.indexing.dense import build_index  # noqa: PLC0415
    from peft_ir.reranker.config import CrossEncoderSpec  # noqa: PLC0415
    from peft_ir.reranker.model import CrossEncoder  # noqa: PLC0415
    from peft_ir.reranker.rerank import rerank  # noqa: PLC0415
    from peft_ir.retriever.config import EncoderSpec  # noqa: PLC0415
    from peft_ir.retriever.encode import encode_corpus  # noqa: PLC0415
    from peft_ir.retriever.encoder import BiEncoder  # noqa: PLC0415
    from peft_ir.retriever.config import RetrieverTrainConfig  # noqa: PLC0415
    from peft_ir.retriever.train import train_retriever  # noqa: PLC0415
    from peft_ir.tuning import TuningConfig  # noqa: PLC0415

    work, name = ctx.scratch("device-logs"), gpu_name()
    docs = scifact_documents(64)
    with captured_logs() as records:
        encode_corpus(BiEncoder(EncoderSpec(passage_max_length=64), device=DEVICE), docs, work / "emb",
                      progress=False)
        run, topics, passages = scifact_pairs(4)
        rerank(dict(list(run.items())[:4]), topics, passages, CrossEncoder(CrossEncoderSpec()), hits=4)
        train_retriever(RetrieverTrainConfig(train=str(SCIFACT), output=str(work / "train"), num_negatives=0,
                                             tuning=TuningConfig(method="iaa-l"), batch_size=8, max_steps=1,
                                             dev_queries=0, save_steps=1, progress=False))
        build_index(work / "emb", work / "index", "Flat", progress=False)
        index = open_index(work / "index", "auto")
    lines = [r.getMessage() for r in records]
    missing = []
    for doing in ("encoding", "training", "re-ranking"):
        said = [line for line in lines if f"{doing} on " in line]
        out[doing] = said[0] if said else "no log line"
        if not any(name in line and "cuda" in line for line in said):
            missing.append(doing)
    out["search backend"] = index_backend(index)
    searching = [line for line in lines if "searching on" in line]
    out["search log"] = searching[0] if searching else "no log line"
    if "gpu" not in out["search backend"] and "cuda" not in out["search backend"]:
        missing.append("search (backend)")
    require(not missing, f"no log line naming {name} for: {', '.join(missing)}")


def _forward(model: Any, batch: dict[str, Any], kind: str) -> tuple[Any, Any]:
    """(output compared across devices, loss that reaches every parameter the forward pass uses)."""
    result = model(**batch)
    if kind == "cross":
        return result.logits, result.logits.float().square().mean()
    hidden = result.last_hidden_state * batch["attention_mask"][..., None]
    loss = hidden.float().square().mean()
    if getattr(result, "pooler_output", None) is not None:
        loss = loss + result.pooler_output.float().square().mean()
    return hidden, loss


def _check_variant(kind: str, variant: dict[str, Any], base: Any, batch: dict[str, Any]) -> dict[str, Any]:
    """Apply one method on CUDA, compare with the same weights on the CPU, check gradients, then cast to bf16."""
    import torch  # noqa: PLC0415

    from peft_ir.tuning import TuningConfig, apply_tuning  # noqa: PLC0415

    config = TuningConfig(**variant, seed=0)
    tuned = apply_tuning(copy.deepcopy(base).to(DEVICE), config)
    where = torch.device(DEVICE).type
    off = [n for n, t in [*tuned.named_parameters(), *tuned.named_buffers()] if t.device.type != where]
    require(not off, f"{len(off)} tensor(s) left off the GPU by apply_tuning, e.g. {off[0] if off else ''}")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # so that zero-initialised modules change the output
        for p in tuned.parameters():
            if p.requires_grad:
                p.add_(0.02 * torch.randn(p.shape, generator=g).to(p.device))
    on_cpu = apply_tuning(copy.deepcopy(base), config)
    on_cpu.load_state_dict({k: v.cpu() for k, v in tuned.state_dict().items()})
    cuda_batch = {k: v.to(DEVICE) for k, v in batch.items()}
    tuned.eval()
    on_cpu.eval()
    with torch.no_grad():
        want, _ = _forward(on_cpu, batch, kind)
        got, _ = _forward(tuned, cuda_batch, kind)
    row: dict[str, Any] = {"fp32 gap": relative_gap(got.cpu(), want)}
    tuned.train()
    _, loss = _forward(tuned, cuda_batch, kind)
    loss.backward()
    trainable = {n for n, p in tuned.named_parameters() if p.requires_grad}
    with_grad = {n for n, p in tuned.named_parameters() if p.grad is not None}
    row["grads ok"] = bool(trainable) and with_grad == trainable and all(
        bool(torch.isfinite(p.grad).all()) for p in tuned.parameters() if p.grad is not None)
    tuned.zero_grad(set_to_none=True)
    tuned.to(torch.bfloat16)
    with torch.no_grad():
        tuned.eval()
        half, _ = _forward(tuned, cuda_batch, kind)
    tuned.train()
    _, loss = _forward(tuned, cuda_batch, kind)
    loss.backward()
    row["bf16 finite"] = bool(torch.isfinite(half.float()).all()) and bool(torch.isfinite(loss)) and all(
        bool(torch.isfinite(p.grad.float()).all()) for p in tuned.parameters() if p.grad is not None)
    row["bf16 gap"] = relative_gap(half.float().cpu(), want)
    return row


@step("methods", "every method applied on CUDA (encoder and cross-encoder): CUDA fp32 = CPU within 1e-4, "
                 "gradients exactly on the trainable parameters, finite after a bf16 cast")
def check_methods(ctx: Context, out: dict[str, Any]) -> None:
    from peft_ir.reranker.config import CrossEncoderSpec  # noqa: PLC0415
    from peft_ir.reranker.model import load_base  # noqa: PLC0415
    from peft_ir.retriever.config import EncoderSpec  # noqa: PLC0415
    from peft_ir.retriever.encoder import BiEncoder  # noqa: PLC0415

    texts = [t for _, t in scifact_docs(8)]
    queries = ["what reduces the risk of heart disease?"] * len(texts)
    encoder = BiEncoder(EncoderSpec(), device="cpu")
    cross, cross_tok = load_base(CrossEncoderSpec(), device="cpu")
    bases = {
        "encoder": (encoder.hf_model, encoder.model.tokenizer(texts, padding=True, truncation=True, max_length=128,
                                                              return_tensors="pt")),
        "cross": (cross, cross_tok(queries, texts, padding=True, truncation=True, max_length=128,
                                   return_tensors="pt")),
    }
    failures, worst, worst_bf16 = [], (0.0, ""), (0.0, "")
    for kind, (base, batch) in bases.items():
        base.eval()
        for variant in VARIANTS:
            label = f"{kind}/{'+'.join(str(v) for v in variant.values())}"
            try:
                row = _check_variant(kind, variant, base, dict(batch))
            except Exception as exc:  # noqa: BLE001 (one variant's error is recorded; the others still run)
                failures.append(f"{label}: {error_line(exc)}")
                continue
            worst = max(worst, (row["fp32 gap"], label))
            worst_bf16 = max(worst_bf16, (row["bf16 gap"], label))
            if row["fp32 gap"] > TOLERANCE:
                failures.append(f"{label}: CUDA fp32 differs from CPU by {row['fp32 gap']:.2e}")
            if not row["grads ok"]:
                failures.append(f"{label}: gradients not exactly on the trainable parameters (or not finite)")
            if not row["bf16 finite"]:
                failures.append(f"{label}: not finite after the bf16 cast")
    out["variants"] = len(VARIANTS) * len(bases)
    out["largest fp32 gap"] = f"{worst[0]:.2e} ({worst[1]})"
    out["largest bf16 gap (info)"] = f"{worst_bf16[0]:.2e} ({worst_bf16[1]})"
    out["failed"] = len(failures)
    require(not failures, f"{len(failures)} failure(s): " + "; ".join(failures[:3]))


def _train_and_measure(ctx: Context, out: dict[str, Any], trainer: str) -> None:
    """`ctx.steps` steps of each TRAINED_METHODS with one trainer: steps/s, loss finite, workers and pinned memory."""
    import torch  # noqa: PLC0415

    from peft_ir.data import write_run  # noqa: PLC0415
    from peft_ir.training.args import dataloader_workers  # noqa: PLC0415
    from peft_ir.tuning import TuningConfig  # noqa: PLC0415

    work = ctx.scratch(f"train-{trainer}")
    workers = dataloader_workers(True, 1)  # what one process on a GPU should get: up to 4, a core left over
    from peft_ir.training import skeleton  # noqa: PLC0415  (run_training asks it for the Trainer's arguments)

    if trainer == "retriever":
        from peft_ir.retriever.config import EncoderSpec, RetrieverTrainConfig  # noqa: PLC0415
        from peft_ir.retriever.train import train_retriever  # noqa: PLC0415
    else:
        from peft_ir.reranker.config import CrossEncoderSpec, RerankerTrainConfig  # noqa: PLC0415
        from peft_ir.reranker.training import train_reranker  # noqa: PLC0415

        run, _, _ = scifact_pairs(30, split="train", seed=1)  # random negatives stand in for BM25's (no Java)
        write_run(run, work / "negatives.trec")
    seen: list[dict[str, Any]] = []

    def record(original: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        def call(*args: Any, **kwargs: Any) -> dict[str, Any]:
            seen.append(original(*args, **kwargs))
            return seen[-1]
        return call

    problems = []
    common = dict(train=str(SCIFACT), max_steps=ctx.steps, dev_queries=10, eval_steps=ctx.steps,
                  save_steps=ctx.steps, logging_steps=1, progress=False)
    for method in TRAINED_METHODS:
        out_dir = work / method
        if trainer == "retriever":
            cfg = RetrieverTrainConfig(output=str(out_dir), num_negatives=0, batch_size=16, dev_corpus=200,
                                       encoder=EncoderSpec(passage_max_length=128),
                                       tuning=TuningConfig(method=method), **common)
            train = train_retriever
        else:
            cfg = RerankerTrainConfig(output=str(out_dir), negatives_run=str(work / "negatives.trec"),
                                      negatives_pool=16, group_size=8, batch_size=4, dev_candidates=10,
                                      cross_encoder=CrossEncoderSpec(passage_max_length=128),
                                      tuning=TuningConfig(method=method), **common)
            train = train_reranker
        torch.cuda.reset_peak_memory_stats()
        try:
            with wrapped(skeleton, "common_trainer_args", record):
                summary = train(cfg)
        except Exception as exc:  # noqa: BLE001 (one method's error is recorded; the others still train)
            out[method] = f"error: {error_line(exc)}"
            problems.append(f"{method}: {error_line(exc)}")
            continue
        logs = read_trainer_log(out_dir / "metrics.jsonl")
        losses = [row["loss"] for row in logs if "loss" in row]
        speed = next((row["train_steps_per_second"] for row in logs if "train_steps_per_second" in row), None)
        args = seen[-1] if seen else {}
        out[method] = (f"{summary.get('steps')} steps, {speed if speed is not None else '?'} steps/s, "
                       f"{args.get('dataloader_num_workers', '?')} workers, "
                       f"pinned {args.get('dataloader_pin_memory')}, "
                       f"peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
        if summary.get("steps") != ctx.steps:
            problems.append(f"{method}: {summary.get('steps')} steps instead of {ctx.steps}")
        if not losses or not all(math.isfinite(x) for x in losses):
            problems.append(f"{method}: loss missing or not finite ({losses[:3]})")
        if not (out_dir / "adapter").is_dir():
            problems.append(f"{method}: no adapter written")
        if args.get("dataloader_num_workers") != workers or not args.get("dataloader_pin_memory"):
            problems.append(f"{method}: trained with {args.get('dataloader_num_workers')} dataloader workers (not "
                            f"{workers}) / pinned memory {args.get('dataloader_pin_memory')} on CUDA")
    require(not problems, "; ".join(problems))


@step("train-retriever", "(c) 8 steps (--steps) of the bi-encoder trainer per method (IAA-L, LoRA, prefix) on "
                         "CUDA with dataloader workers and pinned memory: steps/s, finite loss, adapter written")
def check_train_retriever(ctx: Context, out: dict[str, Any]) -> None:
    _train_and_measure(ctx, out, "retriever")


@step("train-reranker", "(c) the same for the cross-encoder trainer (groups of 8, random negatives)")
def check_train_reranker(ctx: Context, out: dict[str, Any]) -> None:
    _train_and_measure(ctx, out, "reranker")


def _one_bf16_step(work: Path, trainer: str, method: str, **settings: Any) -> tuple[float, dict[str, Any]]:
    """One --bf16 optimiser step of `trainer` with `method` on MiniLM: (the logged loss, the summary)."""
    from peft_ir.tuning import TuningConfig  # noqa: PLC0415

    out_dir = work / f"{trainer}-{method}{''.join(f'-{k}' for k in settings)}"
    common = dict(train=str(SCIFACT), output=str(out_dir), max_steps=1, dev_queries=0, save_steps=1, logging_steps=1,
                  progress=False, bf16=True, tuning=TuningConfig(method=method), **settings)
    if trainer == "retriever":
        from peft_ir.retriever.config import EncoderSpec, RetrieverTrainConfig  # noqa: PLC0415
        from peft_ir.retriever.train import train_retriever  # noqa: PLC0415

        summary = train_retriever(RetrieverTrainConfig(num_negatives=0, batch_size=16,
                                                       encoder=EncoderSpec(passage_max_length=128), **common))
    else:
        from peft_ir.reranker.config import CrossEncoderSpec, RerankerTrainConfig  # noqa: PLC0415
        from peft_ir.reranker.training import train_reranker  # noqa: PLC0415

        summary = train_reranker(RerankerTrainConfig(negatives_run=str(work / "negatives.trec"), negatives_pool=16,
                                                     group_size=8, batch_size=4,
                                                     cross_encoder=CrossEncoderSpec(passage_max_length=128), **common))
    losses = [row["loss"] for row in read_trainer_log(out_dir / "metrics.jsonl") if "loss" in row]
    if not losses or not all(math.isfinite(x) for x in losses):
        raise CheckFailed(f"loss missing or not finite ({losses[:3]})")
    if summary.get("steps") != 1 or not (out_dir / "adapter").is_dir():
        raise CheckFailed(f"{summary.get('steps')} steps, adapter written: {(out_dir / 'adapter').is_dir()}")
    return losses[0], summary


@step("bf16-train", "one --bf16 training step per method (every registered method, retriever and re-ranker, "
                    "MiniLM): finite loss, adapter written; --gradient-checkpointing under bf16 (adapter, IAA-L, "
                    "prefix) gives the loss without it within 1 %")
def check_bf16_train(ctx: Context, out: dict[str, Any]) -> None:
    from peft_ir.data import write_run  # noqa: PLC0415
    from peft_ir.tuning import METHODS  # noqa: PLC0415

    work = ctx.scratch("bf16-train")
    run, _, _ = scifact_pairs(30, split="train", seed=1)  # random negatives stand in for BM25's (no Java)
    write_run(run, work / "negatives.trec")
    problems: list[str] = []
    plain: dict[str, float] = {}
    for trainer in ("retriever", "reranker"):
        for method in METHODS:
            try:
                loss, _ = _one_bf16_step(work, trainer, method)
            except Exception as exc:  # noqa: BLE001 (one method's error is recorded; the others still train)
                problems.append(f"{trainer}/{method}: {error_line(exc)}")
                continue
            out[f"{trainer}/{method}"] = f"loss {loss:.4f}"
            if trainer == "retriever":
                plain[method] = loss
    for method in ("adapter", "iaa-l", "prefix"):
        result = _peak_of(lambda m=method: _one_bf16_step(work, "retriever", m, gradient_checkpointing=True))
        if isinstance(result, str):
            problems.append(f"checkpointed {method}: {result}")
            continue
        (loss, _), peak = result
        out[f"retriever/{method} checkpointed"] = f"loss {loss:.4f}, peak {peak:.2f} GiB"
        if method in plain and not math.isclose(loss, plain[method], rel_tol=0.01):
            problems.append(f"checkpointed {method}: loss {loss:.4f} vs {plain[method]:.4f} without")
    out["failed"] = len(problems)
    require(not problems, f"{len(problems)} failure(s): " + "; ".join(problems[:3]))


def _peak_of(fn: Callable[[], Any]) -> Any:
    """(fn(), peak GPU memory in GiB while it ran), or its error line."""
    import torch  # noqa: PLC0415

    torch.cuda.reset_peak_memory_stats()
    try:
        result = fn()
    except Exception as exc:  # noqa: BLE001
        return error_line(exc)
    return result, torch.cuda.max_memory_allocated() / 2**30


@step("encode", "SciFact (5,183 docs, max length 256) encoded in fp32/fp16/bf16: cosine >= 0.999 to fp32, docs/s; "
                "fp32 GPU = CPU within 1e-4 on 256 docs")
def check_encode(ctx: Context, out: dict[str, Any]) -> None:
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415

    from peft_ir.retriever.config import EncoderSpec  # noqa: PLC0415
    from peft_ir.retriever.encoder import BiEncoder  # noqa: PLC0415

    texts = [t for _, t in scifact_docs()]
    vectors = {}
    for label, dtype in (("fp32", None), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
        encoder = BiEncoder(EncoderSpec(passage_max_length=256), device=DEVICE, dtype=dtype)
        encoder.encode_passages(texts[:256], batch_size=128)  # warm-up
        synchronize()
        t0 = time.perf_counter()
        vectors[label] = encoder.encode_passages(texts, batch_size=128)
        synchronize()
        out[f"{label} docs/s"] = round(len(texts) / (time.perf_counter() - t0))
        del encoder
    problems = []
    for label in ("fp16", "bf16"):
        a, b = vectors[label].astype(np.float64), vectors["fp32"].astype(np.float64)
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        out[f"{label} min cosine"] = float(cos.min())
        if not np.isfinite(a).all() or cos.min() < MIN_COSINE:
            problems.append(f"{label}: min cosine {cos.min():.5f} < {MIN_COSINE}")
    cpu = BiEncoder(EncoderSpec(passage_max_length=256), device="cpu").encode_passages(texts[:256], batch_size=64)
    out["fp32 GPU-CPU gap"] = float(np.abs(vectors["fp32"][:256] - cpu).max())
    if out["fp32 GPU-CPU gap"] > TOLERANCE:
        problems.append(f"fp32 GPU embeddings differ from CPU by {out['fp32 GPU-CPU gap']:.2e}")
    require(not problems, "; ".join(problems))


FAISS_TYPES = {  # factory -> (overlap@10 with the same index searched on the CPU, whether faiss-gpu has it on GPU)
    "Flat": (0.999, True),
    "HNSW32": (0.99, False),        # no GPU version in FAISS: searched on the CPU with a warning, or refused
    # PQ64's float32 lookup tables need 64 KiB of shared memory: float16 ones on GPU ("np": no polysemous code
    # training, which only CPU search uses and which would take minutes)
    "IVF1024,PQ64np": (0.8, True),
    "IVF1024,Flat": (0.99, True),
}


@step("faiss-types", "Flat / HNSW32 / IVF-PQ (PQ64) / IVF-Flat on 100k vectors: each works on the GPU (same hits "
                     "as on the CPU), or falls back / is refused with a clear message")
def check_faiss_types(ctx: Context, out: dict[str, Any]) -> None:
    from peft_ir.errors import PeftIRError  # noqa: PLC0415
    from peft_ir.indexing.dense import build_index, visible_gpus  # noqa: PLC0415

    work = ctx.scratch("faiss-types")
    faiss_gpus = visible_gpus()[0]  # faiss-cpu: Flat reaches the GPU through torch, the others fall back (warned)
    data = clustered_vectors(FAISS_VECTORS + 200, 384, seed=0)
    base, queries = data[:FAISS_VECTORS], data[FAISS_VECTORS:]
    write_embeddings(work / "emb", base)
    problems = []
    for factory, (needed, gpu_type) in FAISS_TYPES.items():
        on_gpu = gpu_type and (faiss_gpus > 0 or factory == "Flat")
        folder = work / factory.replace(",", "_")
        t0 = time.perf_counter()
        try:
            build_index(work / "emb", folder, factory, progress=False)
        except Exception as exc:  # noqa: BLE001 (recorded per type; the other types are still tried)
            out[factory] = f"build error: {error_line(exc)}"
            problems.append(f"{factory}: build: {error_line(exc)}")
            continue
        built = time.perf_counter() - t0
        cpu = open_index(folder, "cpu")
        _, want = cpu.search(queries, 100)
        with captured_logs(logging.WARNING) as warnings:
            try:
                gpu = open_index(folder, "cuda")
                t0 = time.perf_counter()
                _, got = gpu.search(queries, 100)
                seconds = time.perf_counter() - t0
            except PeftIRError as exc:
                out[factory] = f"refused: {error_line(exc)} (built in {built:.0f} s)"
                if on_gpu:
                    problems.append(f"{factory}: refused on the GPU")
                continue
            except Exception as exc:  # noqa: BLE001 (a raw FAISS error is not a clean refusal)
                out[factory] = f"error: {error_line(exc)}"
                problems.append(f"{factory}: {error_line(exc)}")
                continue
        backend = index_backend(gpu)
        share = overlap(got, want, 10)
        out[factory] = (f"{backend}, overlap@10 with CPU {share:.3f}, {len(queries) / seconds:.0f} q/s "
                        f"(built in {built:.0f} s)")
        if share < needed:
            problems.append(f"{factory}: overlap@10 with CPU {share:.3f} < {needed}")
        if "gpu" not in backend and "cuda" not in backend and (on_gpu or not warnings):
            problems.append(f"{factory}: searched on {backend}" + ("" if warnings else " without a warning"))
    require(not problems, "; ".join(problems))


@step("faiss-hits", "Flat on the GPU = CPU at hits 1000 and 2048 (up to near-ties), hits 5000 handled")
def check_faiss_hits(ctx: Context, out: dict[str, Any]) -> None:
    from peft_ir.indexing.dense import build_index  # noqa: PLC0415

    work = ctx.scratch("faiss-hits")
    data = clustered_vectors(FAISS_VECTORS + 50, 384, seed=1)
    base, queries = data[:FAISS_VECTORS], data[FAISS_VECTORS:]
    write_embeddings(work / "emb", base)
    build_index(work / "emb", work / "flat", "Flat", progress=False)
    cpu, gpu = open_index(work / "flat", "cpu"), open_index(work / "flat", "cuda")
    out["backend"] = index_backend(gpu)
    problems = []
    for k in (1000, 2048, 5000):
        _, want = cpu.search(queries, k)
        try:
            _, got = gpu.search(queries, k)
        except Exception as exc:  # noqa: BLE001 (recorded per k; the other k are still tried)
            out[f"hits {k}"] = f"error: {error_line(exc)}"
            problems.append(f"hits {k}: {error_line(exc)}")
            continue
        gap, same = ranking_gap(base, queries, rows_of(got), rows_of(want))
        out[f"hits {k}"] = f"score gap {gap:.1e}, same document at {same:.4f} of ranks"
        if gap > TOLERANCE:
            problems.append(f"hits {k}: the GPU's ranking differs from the CPU's (score gap {gap:.2e})")
    require(not problems, "; ".join(problems))


@step("torch-exact", "torch exact search (the faiss-cpu path) on 2 M vectors: fp32 = faiss CPU, fp16 close, extra "
                     "GPU memory within its tile budget")
def check_torch_exact(ctx: Context, out: dict[str, Any]) -> None:
    import faiss  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415

    n, dim, tile = EXACT_VECTORS, 384, 256 * 2**20
    data = clustered_vectors(n + 64, dim, seed=2, clusters=5000)
    base, queries = data[:n], data[n:]
    index = faiss.IndexFlatIP(dim)
    index.add(base)
    del data
    _, want = index.search(queries[:16], 100)
    problems = []
    for label, fp16 in (("fp32", False), ("fp16", True)):
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated()
        search = torch_exact_search(index, fp16, tile)
        stored = torch.cuda.memory_allocated() - before
        torch.cuda.reset_peak_memory_stats()
        search.search(queries, 1000)  # warm-up, and the peak to judge
        extra = torch.cuda.max_memory_allocated() - before - stored
        synchronize()
        t0 = time.perf_counter()
        search.search(queries, 1000)
        qps = len(queries) / (time.perf_counter() - t0)
        _, got = search.search(queries[:16], 100)
        gap, _ = ranking_gap(base, queries[:16], np.asarray(got).tolist(), want.tolist())
        out[label] = (f"stored {stored / 2**30:.2f} GiB, extra peak {extra / 2**20:.0f} MiB "
                      f"(tile {tile // 2**20} MiB), "
                      f"{qps:.0f} q/s at k=1000, score gap to faiss {gap:.1e}")
        budget = 2 * tile + 256 * 2**20
        if extra > budget:
            problems.append(f"{label}: {extra / 2**20:.0f} MiB beyond the stored vectors (budget {budget / 2**20:.0f})")
        if gap > (2e-3 if fp16 else TOLERANCE):
            problems.append(f"{label}: top 100 differ from faiss CPU (score gap {gap:.2e})")
        del search
    require(not problems, "; ".join(problems))


def _cpu_scores(queries: list[str], passages: list[str]) -> list[float]:
    from peft_ir.reranker.config import CrossEncoderSpec  # noqa: PLC0415
    from peft_ir.reranker.model import CrossEncoder  # noqa: PLC0415

    return CrossEncoder(CrossEncoderSpec(), device="cpu").score(queries, passages, batch_size=64)


@step("rerank-pinned", "(b) cross-encoder scoring on CUDA through page-locked memory: 1,024 pairs = CPU within "
                       "1e-4, pairs/s")
def check_rerank_pinned(ctx: Context, out: dict[str, Any]) -> None:
    import torch  # noqa: PLC0415

    from peft_ir.reranker.config import CrossEncoderSpec  # noqa: PLC0415
    from peft_ir.reranker.model import CrossEncoder  # noqa: PLC0415

    run, topics, passages = scifact_pairs(10)
    pairs = [(topics[q], passages[d]) for q, hits in run.items() for d in hits][:1024]
    qs, ps = [q for q, _ in pairs], [p for _, p in pairs]
    encoder = CrossEncoder(CrossEncoderSpec(), device=DEVICE)
    encoder.score(qs[:64], ps[:64])  # warm-up
    pinned = [0]

    def count(original: Callable[..., Any]) -> Callable[..., Any]:
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            pinned[0] += 1
            return original(self, *args, **kwargs)
        return call

    with wrapped(torch.Tensor, "pin_memory", count):
        synchronize()
        t0 = time.perf_counter()
        got = encoder.score(qs, ps, batch_size=32)
        seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    want = _cpu_scores(qs, ps)
    cpu_seconds = time.perf_counter() - t0
    gap = max(abs(a - b) for a, b in zip(got, want))
    out.update({"pairs/s (GPU)": round(len(pairs) / seconds), "pairs/s (CPU)": round(len(pairs) / cpu_seconds),
                "tensors pinned": pinned[0], "GPU-CPU gap": f"{gap:.1e}"})
    require(pinned[0] > 0, "the CUDA scoring path pinned no batch")
    require(gap <= TOLERANCE, f"GPU scores differ from CPU by {gap:.2e}")


@step("rerank-30k", "re-ranking 30,000 pairs (300 SciFact test queries x 100) on CUDA with the on-disk score cache: "
                    "pairs/s, every pair cached, 256 sampled pairs = CPU within 1e-4")
def check_rerank_30k(ctx: Context, out: dict[str, Any]) -> None:
    from peft_ir.reranker.config import CrossEncoderSpec  # noqa: PLC0415
    from peft_ir.reranker.model import CrossEncoder  # noqa: PLC0415
    from peft_ir.reranker.rerank import RerankStats, ScoreCache, rerank  # noqa: PLC0415

    work = ctx.scratch("rerank-30k")
    run, topics, passages = scifact_pairs(100)
    encoder = CrossEncoder(CrossEncoderSpec(), device=DEVICE)
    cache, stats = ScoreCache(work / "scores.jsonl"), RerankStats()
    synchronize()
    t0 = time.perf_counter()
    try:
        scored = rerank(run, topics, passages, encoder, hits=100, batch_size=32, cache=cache, stats=stats)
    finally:
        cache.close()
    seconds = time.perf_counter() - t0
    lines = sum(1 for line in (work / "scores.jsonl").read_text().splitlines() if line.strip())
    sample = random.Random(0).sample([(q, d) for q, hits in scored.items() for d in hits], 256)
    want = _cpu_scores([topics[q] for q, _ in sample], [passages[d] for _, d in sample])
    gap = max(abs(scored[q][d] - w) for (q, d), w in zip(sample, want))
    out.update({"pairs": stats.pairs, "pairs/s": round(stats.scored / seconds), "cache lines": lines,
                "GPU-CPU gap (256 pairs)": f"{gap:.1e}"})
    require(stats.pairs == 30_000 and stats.scored == 30_000, f"scored {stats.scored} of {stats.pairs} pairs")
    require(lines == 30_000, f"the score cache holds {lines} lines, not 30000")
    require(gap <= TOLERANCE, f"GPU scores differ from CPU by {gap:.2e}")


@step("quickstart", f"the quickstart's dense stages on the GPU (zero-shot SciFact: encode, index, search, "
                    f"evaluate): nDCG@10 within {NDCG_SLACK} of the CPU's {ZERO_SHOT_NDCG}")
def check_quickstart(ctx: Context, out: dict[str, Any]) -> None:
    from peft_ir.experiment import load_config  # noqa: PLC0415
    from peft_ir.experiment.pipeline import Pipeline  # noqa: PLC0415

    work = ctx.scratch("quickstart")
    cfg = load_config(ROOT / "configs" / "scifact" / "retrieval" / "zero-shot.yaml",
                      [f"output={work}", "name=zero-shot"], cwd=ROOT)
    t0 = time.perf_counter()
    metrics = Pipeline(cfg, progress=False, echo=lambda line: print(f"    {line}", flush=True)).run()
    out["seconds"] = round(time.perf_counter() - t0)
    test = next(iter(metrics["sets"].values()))
    ndcg = float(test["runs"]["dense"]["means"]["nDCG@10"])
    out["nDCG@10"] = round(ndcg, 4)
    out["CPU figure"] = ZERO_SHOT_NDCG
    require(abs(ndcg - ZERO_SHOT_NDCG) <= NDCG_SLACK, f"nDCG@10 {ndcg:.4f} is not within {NDCG_SLACK} of "
                                                      f"{ZERO_SHOT_NDCG}")


@step("torchrun", "(d) a 2-process torchrun training (NCCL, one GPU per rank): both ranks finish, rank 0 writes")
def check_torchrun(ctx: Context, out: dict[str, Any]) -> None:
    env = dict(os.environ)
    if ctx.original_visible is None:
        env.pop("CUDA_VISIBLE_DEVICES", None)
    else:
        env["CUDA_VISIBLE_DEVICES"] = ctx.original_visible
    count = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.device_count())"], env=env,
                           capture_output=True, text=True, timeout=120, check=True)
    gpus = int(count.stdout.strip().splitlines()[-1])
    out["GPUs"] = gpus
    if gpus < 2:
        raise Skip(f"not run ({gpus} GPU)")
    work = ctx.scratch("torchrun")
    steps = str(ctx.steps)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "peft_ir.cli", "train", "retriever", "--train", str(SCIFACT), "--output", str(work / "run"),
               "--num-negatives", "0", "--max-steps", steps, "--dev-queries", "10", "--dev-corpus", "200",
               "--eval-steps", steps, "--save-steps", steps, "--batch-size", "16"]
    t0 = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400, check=False)
    out["seconds"] = round(time.perf_counter() - t0)
    tail = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    require(done.returncode == 0, f"torchrun exited {done.returncode}: {tail[-1] if tail else ''}")
    summary = json.loads((work / "run" / "summary.json").read_text())
    out["world size"], out["steps"] = summary.get("world_size"), summary.get("steps")
    require(summary.get("world_size") == 2 and summary.get("steps") == ctx.steps,
            f"summary says world size {summary.get('world_size')}, {summary.get('steps')} steps")


# ---------------------------------------------------------------------------------------------------------------
# Running and reporting
# ---------------------------------------------------------------------------------------------------------------

def run_step(item: Step, ctx: Context) -> StepResult:
    """One step, whatever happens inside it: PASS, FAIL with the error's last line, or SKIP."""
    numbers: dict[str, Any] = {}
    t0 = time.perf_counter()
    try:
        item.run(ctx, numbers)
        status, note = PASS, ""
    except Skip as reason:
        status, note = SKIP, str(reason)
    except CheckFailed as exc:
        status, note = FAIL, str(exc).strip().splitlines()[-1] if str(exc).strip() else "check failed"
    except Exception as exc:  # noqa: BLE001 (the check goes on; the traceback goes to stderr)
        traceback.print_exc()
        status, note = FAIL, error_line(exc)
    finally:
        _free_gpu_memory()
    return StepResult(item.name, item.checks, status, numbers, note, time.perf_counter() - t0)


def _free_gpu_memory() -> None:
    import gc  # noqa: PLC0415

    gc.collect()
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _cell(value: Any) -> str:
    if isinstance(value, float):
        value = f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_report(results: Sequence[StepResult], machine: dict[str, str], command: str, *,
                  planned: int | None = None, started: str = "") -> str:
    """The report: machine, command, counts, then one table row per step with what it measured."""
    counts = {s: sum(r.status == s for r in results) for s in (PASS, FAIL, SKIP)}
    total = sum(r.seconds for r in results)
    lines = ["# GPU check", "",
             "Every GPU path of peft-ir run once on a CUDA GPU (issue #20); written by `bench/gpu_check.py`.", "",
             "Machine: " + "; ".join(f"{k} {v}" for k, v in machine.items()), "",
             f"Command: `{command}`" + (f" (started {started})" if started else ""), "",
             f"Result: {counts[PASS]} PASS, {counts[FAIL]} FAIL, {counts[SKIP]} SKIP in {total:.0f} s"
             + (f"; {len(results)} of {planned} steps done (the check was cut short)"
                if planned is not None and len(results) < planned else ""), "",
             "| step | checks | result | measured | note | s |", "|---|---|---|---|---|---:|"]
    for r in results:
        measured = "; ".join(f"{_cell(k)}: {_cell(v)}" for k, v in r.numbers.items())
        lines.append(f"| {r.name} | {_cell(r.checks)} | **{r.status}** | {measured} | {_cell(r.note)} | "
                     f"{r.seconds:.0f} |")
    return "\n".join(lines) + "\n"


def write_report(path: str | Path, text: str) -> None:
    """Whole or not at all: a temporary file renamed over `path`."""
    write_result(text, path)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    def positive(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
        return value

    ap = argparse.ArgumentParser(prog="bench/gpu_check.py", description=__doc__.splitlines()[0],
                                 epilog="steps: " + ", ".join(STEPS))
    ap.add_argument("--output", default=str(DEFAULT_OUTPUT), help="the report (markdown; default %(default)s)")
    ap.add_argument("--only", nargs="+", metavar="STEP", choices=list(STEPS), default=None,
                    help="run these steps only, in the check's order (default: all)")
    ap.add_argument("--steps", type=positive, default=8, help="training steps per trainer and method (default 8)")
    ap.add_argument("--work", default=str(DEFAULT_WORK), help="scratch folder (default %(default)s)")
    ap.add_argument("--list", action="store_true", help="list the steps and exit")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for item in STEPS.values():
            print(f"{item.name:16} {item.checks}")
        return 0
    before = pin_one_gpu()
    ok, why = cuda_available(before)
    if not ok:
        print(f"gpu_check: the GPU check needs a CUDA GPU and refuses to run: {why}", file=sys.stderr)
        return EXIT_NO_CUDA
    selected = [item for name, item in STEPS.items() if args.only is None or name in args.only]
    ctx = Context(steps=args.steps, work=Path(args.work), original_visible=before)
    command = "python bench/gpu_check.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = machine_facts()
    results: list[StepResult] = []
    for k, item in enumerate(selected, 1):
        print(f"[{k}/{len(selected)}] {item.name}: {item.checks}", flush=True)
        result = run_step(item, ctx)
        results.append(result)
        print(f"[{k}/{len(selected)}] {item.name}: {result.status} in {result.seconds:.0f} s"
              + (f" ({result.note})" if result.note else ""), flush=True)
        write_report(args.output, render_report(results, machine, command.strip(), planned=len(selected),
                                                started=started))
    print(render_report(results, machine, command.strip(), started=started))
    print(f"written to {args.output}")
    return EXIT_FAILED if any(r.status == FAIL for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
