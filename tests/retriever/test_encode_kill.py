"""`peft-ir encode` killed with SIGKILL midway resumes without redoing finished chunks and ends identical."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path

import numpy as np
from cpu_only import cpu_env

from peft_ir.data import iter_corpus, write_corpus
from peft_ir.retriever.encode import iter_embeddings

REPO = Path(__file__).resolve().parents[2]


def _encode(corpus: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "peft_ir.cli", "encode", "--corpus", str(corpus), "--output", str(out),
            "--chunk-size", "16", "--batch-size", "8", "--passage-max-length", "128"]


def _load(out: Path) -> tuple[np.ndarray, list[str]]:
    vecs, ids = zip(*iter_embeddings(out))
    return np.concatenate(vecs), [i for chunk in ids for i in chunk]


def test_sigkill_then_resume(scifact: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    write_corpus(islice(iter_corpus(scifact / "corpus.jsonl"), 96), corpus)  # real MiniLM, 6 chunks
    env = cpu_env(HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")  # compared exactly

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_encode(corpus, killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "chunks" / "chunk-000001.npz").exists():
        assert proc.poll() is None and time.time() < deadline, "encoding ended before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = sorted(p.name for p in (killed / "chunks").glob("chunk-*.npz"))
    assert 2 <= len(done_before) < 6 and not (killed / "manifest.json").exists()
    stamps = {n: (killed / "chunks" / n).stat().st_mtime_ns for n in done_before}

    subprocess.run(_encode(corpus, killed), env=env, check=True, capture_output=True)
    assert {n: (killed / "chunks" / n).stat().st_mtime_ns for n in done_before} == stamps  # not redone
    assert not list((killed / "chunks").glob(".*tmp*"))  # no temporary leftovers

    straight = tmp_path / "straight"
    subprocess.run(_encode(corpus, straight), env=env, check=True, capture_output=True)
    (a, ids_a), (b, ids_b) = _load(killed), _load(straight)
    assert ids_a == ids_b and len(ids_a) == 96
    np.testing.assert_allclose(a, b, atol=1e-6)
