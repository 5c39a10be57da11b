"""FAISS Flat vs HNSW through peft-ir's index and search: build time, size, queries/s and recall against exact search.

Two corpora, both searched with the 300 SciFact test queries encoded by all-MiniLM-L6-v2:
- SciFact itself (5,183 real document vectors);
- a larger synthetic corpus (`--synthetic N`): each vector is a real SciFact document vector plus Gaussian noise,
  renormalised, so the data keep SciFact's clustered shape at a size where approximate search matters. It says
  nothing about effectiveness, only about speed against recall.

Indexes are built with `peft_ir.indexing.dense.build_index` and searched with `DenseIndex.search` (what
`peft-ir index` / `peft-ir search` run). Recall@k is the overlap of each index's top k with the Flat index's top k
(exact inner product), averaged over queries. Search timings are medians over `--rounds` repetitions of the whole
query batch, the variants alternating within each round.

    python bench/faiss_search.py --synthetic 200000 --rounds 5 --output bench/results/faiss_search.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from machine import describe, publish, time_rounds  # noqa: E402

from peft_ir.data import iter_corpus, load_topics  # noqa: E402
from peft_ir.fingerprint import manifest_fingerprint  # noqa: E402
from peft_ir.indexing.dense import DenseIndex, build_index  # noqa: E402
from peft_ir.retriever.config import EncoderSpec  # noqa: E402
from peft_ir.retriever.encoder import BiEncoder  # noqa: E402
from peft_ir.retriever.encode import encode_corpus, iter_embeddings, read_manifest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def scifact_embeddings(corpus: Path, work: Path, encoder: BiEncoder, batch_size: int) -> Path:
    """The SciFact corpus encoded once (resumable, like `peft-ir encode`)."""
    out = work / "scifact-emb"
    if not (out / "manifest.json").is_file():
        encode_corpus(encoder, iter_corpus(corpus / "corpus.jsonl"), out, batch_size=batch_size)
    return out


def synthetic_embeddings(real: Path, work: Path, n: int, noise: float, chunk: int = 50_000) -> Path:
    """`n` vectors around the real ones (real + noise, unit length) in peft-ir's embedding-folder layout."""
    out = work / f"synthetic-{n}-{noise}"
    if (out / "manifest.json").is_file():
        return out
    base = np.concatenate([v for v, _ in iter_embeddings(real)])
    rng = np.random.default_rng(0)
    (out / "chunks").mkdir(parents=True, exist_ok=True)
    chunks = (n + chunk - 1) // chunk
    for k in range(chunks):
        size = min(chunk, n - k * chunk)
        vecs = base[rng.integers(0, len(base), size)]
        vecs = vecs + rng.standard_normal(vecs.shape, dtype=np.float32) * (noise / np.sqrt(vecs.shape[1]))
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        np.savez(out / "chunks" / f"chunk-{k:06d}.npz", embeddings=vecs.astype(np.float32),
                 ids=np.array([f"s{k * chunk + i}" for i in range(size)]))
    manifest = read_manifest(real) | {"num_docs": n, "num_chunks": chunks, "chunk_size": chunk}
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return out


def recall(found: list[list[str]], exact: list[list[str]], k: int) -> float:
    return float(np.mean([len(set(f[:k]) & set(e[:k])) / len(e[:k]) for f, e in zip(found, exact)]))


def bench_corpus(label: str, emb: Path, queries: np.ndarray, hnsw_m: int, ef_search: list[int], rounds: int,
                 hits: int, work: Path) -> list[dict]:
    """Flat and HNSW built once each; HNSW searched at every efSearch (a query-time setting)."""
    built = {}
    for factory in ("Flat", f"HNSW{hnsw_m}"):
        folder = work / f"{label}-{factory}"
        t0 = time.perf_counter()
        build_index(emb, folder, factory, progress=False)
        seconds = time.perf_counter() - t0
        built[factory] = (DenseIndex(folder, device="cpu"), seconds, sum(p.stat().st_size for p in folder.iterdir()))
    variants = [("Flat", "Flat", None)] + [(f"HNSW{hnsw_m} efSearch {ef}", f"HNSW{hnsw_m}", ef) for ef in ef_search]

    def search(factory: str, ef: int | None) -> list[list[str]]:
        index = built[factory][0]
        if ef is not None:
            index.index.hnsw.efSearch = ef
        return index.search(queries, hits)[1]

    results = {name: search(factory, ef) for name, factory, ef in variants}
    times = time_rounds({name: lambda f=factory, e=ef: search(f, e) for name, factory, ef in variants}, rounds)
    exact = results["Flat"]
    rows = []
    for name, factory, _ in variants:
        index, seconds, size = built[factory]
        med = statistics.median(times[name])
        rows.append({"corpus": label, "index": name, "vectors": index.index.ntotal, "build_s": seconds,
                     "size_mb": size / 2**20, "qps": len(queries) / med, "search_s": med,
                     "r10": recall(results[name], exact, 10), "r100": recall(results[name], exact, hits)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / "data" / "scifact"))
    ap.add_argument("--synthetic", type=int, default=200_000, help="size of the synthetic corpus (0 = skip)")
    ap.add_argument("--noise", type=float, default=0.6, help="noise norm added to each synthetic vector")
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--ef-search", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--hits", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--embeddings", default=None,
                    help="a `peft-ir encode` folder of the SciFact corpus by the base model (default: encode it)")
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench" / "faiss"))
    ap.add_argument("--output", default=None)
    args = ap.parse_args()

    import faiss

    data, work = Path(args.data), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    encoder = BiEncoder(EncoderSpec(passage_max_length=256), device="cpu")
    real = Path(args.embeddings) if args.embeddings else scifact_embeddings(data, work, encoder, args.batch_size)
    if read_manifest(real)["fingerprint"] != manifest_fingerprint(encoder.manifest()):
        raise SystemExit(f"{real} was not encoded by the base model (its fingerprint differs)")
    topics = load_topics(data, split="test")
    queries = encoder.encode_queries(list(topics.values()), batch_size=args.batch_size)

    rows = []
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        rows += bench_corpus("SciFact", real, queries, args.hnsw_m, args.ef_search, args.rounds, args.hits,
                             Path(tmp))
        if args.synthetic:
            synth = synthetic_embeddings(real, work, args.synthetic, args.noise)
            rows += bench_corpus(f"synthetic {args.synthetic:,}", synth, queries, args.hnsw_m, args.ef_search,
                                 args.rounds, args.hits, Path(tmp))

    cmd = (f"python bench/faiss_search.py --synthetic {args.synthetic} --noise {args.noise} --hnsw-m {args.hnsw_m} "
           f"--ef-search {' '.join(map(str, args.ef_search))} --hits {args.hits} --rounds {args.rounds}")
    lines = [
        "# Dense search: FAISS Flat vs HNSW (queries/s and recall against exact search)", "",
        f"Machine: {describe()}; FAISS {faiss.__version__}, {faiss.omp_get_max_threads()} OpenMP threads", "",
        f"Command: `{cmd}`", "",
        f"{len(queries)} SciFact test queries (all-MiniLM-L6-v2, 384 dimensions, inner product on unit vectors), "
        f"searched as one batch for the top {args.hits}; queries/s from the median of {args.rounds} rounds with the "
        "indexes alternating; the HNSW rows share one index (efSearch is a query-time setting). recall@k = "
        "overlap with Flat's exact top k. Build time and size include writing the index folder. The synthetic corpus is real SciFact vectors plus Gaussian noise of norm "
        f"{args.noise}, renormalised: a stand-in for a larger corpus of the same shape, for speed only.", "",
        "| corpus | index | vectors | build (s) | size (MiB) | queries/s | recall@10 | recall@100 | speed-up vs Flat |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    flat_qps = {r["corpus"]: r["qps"] for r in rows if r["index"] == "Flat"}
    for r in rows:
        lines.append(f"| {r['corpus']} | {r['index']} | {r['vectors']:,} | {r['build_s']:.1f} | {r['size_mb']:.1f} | "
                     f"{r['qps']:,.0f} | {r['r10']:.4f} | {r['r100']:.4f} | {r['qps'] / flat_qps[r['corpus']]:.2f} |")
    text = "\n".join(lines) + "\n"
    publish(text, args.output)


if __name__ == "__main__":
    main()
