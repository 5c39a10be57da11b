"""`peft-ir rewrite car` (training-time CAR rewriting), `peft-ir rewrite expand` (query2doc / HyDE topics) and
`peft-ir rewrite vector-prf` (dense search with Rocchio feedback)."""

from __future__ import annotations

import argparse
from pathlib import Path

from peft_ir.cli.dense import add_query_encoder_flags
from peft_ir.cli.flags import add_flags
from peft_ir.indexing.config import SearchConfig


def _backend_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("LLM back-end (an OpenAI-compatible endpoint, or a local transformers model)")
    g.add_argument("--base-url", default=None, help="endpoint base URL, e.g. http://localhost:8000/v1 (vLLM)")
    g.add_argument("--model", default=None, help="model name the endpoint serves")
    g.add_argument("--api-key-env", default="OPENAI_API_KEY",
                   help="environment variable holding the API key (default OPENAI_API_KEY); the key is read "
                        "from there only and is never logged or written")
    g.add_argument("--local-model", default=None, help="path of a local causal LM (transformers) instead of HTTP")
    g.add_argument("--device", default="cpu", help="device for --local-model")
    g.add_argument("--max-tokens", type=int, default=256, help="maximum new tokens per generation")
    g.add_argument("--temperature", type=float, default=0.0, help="sampling temperature for the endpoint (0: greedy)")
    g.add_argument("--timeout", type=float, default=60.0, help="seconds per HTTP request")
    g.add_argument("--max-retries", type=int, default=4, help="retries on connection errors, timeouts, 429 and 5xx")
    g.add_argument("--backoff", type=float, default=1.0, help="first retry delay in seconds (doubles each retry)")
    g.add_argument("--workers", type=int, default=1, help="concurrent requests to the endpoint")
    g.add_argument("--system", default=None, help="optional system message")
    g.add_argument("--cache", default=None,
                   help="JSONL cache of generations (default: OUTPUT.llm-cache.jsonl); re-runs resume from it")
    g.add_argument("--prompt-file", default=None, help="prompt template file ({query} and, for car, {passage})")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rewrite", help="LLM query rewriting: CAR for training files, query2doc/HyDE for topics")
    cmds = p.add_subparsers(dest="rewrite_command", required=True, metavar="SUBCOMMAND")

    c = cmds.add_parser("car", help="rewrite training queries with their relevant passage as context (CAR)")
    c.add_argument("--train", required=True, help="training file (Tevatron jsonl, FlagEmbedding jsonl, triples tsv)")
    c.add_argument("--output", required=True, help="new training file (written only when every rewrite succeeded)")
    c.add_argument("--shape", choices=("flag", "tevatron", "triples"), default=None,
                   help="output format (default: that of --train)")
    c.add_argument("--keep-original", action="store_true", help="keep each original example beside its rewrite")
    c.add_argument("--max-passage-chars", type=int, default=2000, help="context passage is cut to this length")
    _backend_flags(c)
    c.set_defaults(func=run_car)

    e = cmds.add_parser("expand", help="expand topics with an LLM (query2doc) or replace them by a passage (HyDE)")
    e.add_argument("--topics", required=True, help="topics tsv, queries.jsonl, BEIR folder (with --split) or irds:ID")
    e.add_argument("--split", default="test")
    e.add_argument("--output", required=True, help="topics file (qid<TAB>text) to write")
    e.add_argument("--mode", choices=("query2doc", "hyde"), required=True)
    e.add_argument("--repeat", type=int, default=5, help="query2doc: times the query is repeated (5 for BM25)")
    e.add_argument("--sep", default=" ", help="query2doc: separator between the query copies and the passage")
    e.add_argument("--task", default="web", help="HyDE prompt: web, scifact, arguana, trec-covid, fiqa")
    _backend_flags(e)
    e.set_defaults(func=run_expand)

    v = cmds.add_parser("vector-prf", help="dense search with Rocchio vector pseudo-relevance feedback",
                        description="q' = alpha*q + beta*mean(top fb-docs passage vectors), renormalised when the "
                                    "index holds normalised vectors, then searched again.")
    v.add_argument("--index", required=True, nargs="+", help="dense index folder(s) from `peft-ir index`")
    v.add_argument("--topics", required=True, help="topics tsv, queries.jsonl, BEIR folder (with --split) or irds:ID")
    v.add_argument("--split", default="test")
    v.add_argument("--output", required=True, help="TREC run to write")
    v.add_argument("--fb-docs", type=int, default=3, help="feedback passages (Pyserini's default 3)")
    v.add_argument("--alpha", type=float, default=0.9, help="weight of the query vector (Pyserini's default 0.9)")
    v.add_argument("--beta", type=float, default=0.1, help="weight of the feedback mean (Pyserini's default 0.1)")
    add_flags(v, SearchConfig)
    add_query_encoder_flags(v)
    v.add_argument("--tag", default="dense+vprf")
    v.set_defaults(func=run_vector_prf)


class _ShardSet:
    """Several dense index shards behind the single-index protocol of vector PRF (exact merged search)."""

    def __init__(self, shards):  # type: ignore[no-untyped-def]
        self.shards = shards
        self.manifest = shards[0].manifest

    def search(self, queries, k):  # type: ignore[no-untyped-def]
        from peft_ir.indexing.dense import search_shards

        return search_shards(self.shards, queries, k)

    def vectors(self, docids):  # type: ignore[no-untyped-def]
        """Each shard is asked once, for the documents it holds (in the order asked)."""
        import numpy as np

        from peft_ir.errors import PeftIRError

        docids = list(docids)
        owner = []
        for d in docids:
            owner.append(next((j for j, shard in enumerate(self.shards) if d in shard), None))
            if owner[-1] is None:
                raise PeftIRError(f"document {d!r} is in none of the index shards")
        out = np.zeros((len(docids), self.shards[0].dim), dtype=np.float32)
        for j, shard in enumerate(self.shards):
            at = [i for i, o in enumerate(owner) if o == j]
            if at:
                out[at] = shard.vectors([docids[i] for i in at])
        return out


def run_vector_prf(args: argparse.Namespace) -> int:
    from peft_ir.data import load_topics, write_run
    from peft_ir.indexing.search import encoder_for, load_shards
    from peft_ir.rewrite.vector_prf import index_is_normalised, prf_run, vector_prf_search

    shards = load_shards(args.index, args.device, args.nprobe, fp16=args.fp16_index)
    encoder = encoder_for(shards, args.model, args.adapter, args.dtype)
    index = shards[0] if len(shards) == 1 else _ShardSet(shards)
    topics = load_topics(args.topics, args.split)
    qids = list(topics)
    encoder.log_truncated(encoder.count_truncated(list(topics.values()), "query"), len(qids), "query")
    run = {}
    for start in range(0, len(qids), args.batch_size):
        batch = qids[start:start + args.batch_size]
        vecs = encoder.encode_queries([topics[q] for q in batch], batch_size=args.batch_size)
        run.update(prf_run(batch, vector_prf_search(index, vecs, args.hits, args.fb_docs, args.alpha, args.beta)))
    write_run(run, args.output, tag=args.tag, hits=args.hits)
    print(f"vector PRF (fb_docs {args.fb_docs}, alpha {args.alpha}, beta {args.beta}, "
          f"renormalised: {index_is_normalised(index)}) over {len(run)} queries into {args.output}")
    return 0


def _setup(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from peft_ir.errors import PeftIRError
    from peft_ir.rewrite.cache import RewriteCache
    from peft_ir.rewrite.llm import make_backend

    template = None
    if args.prompt_file:
        try:
            template = Path(args.prompt_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise PeftIRError(f"cannot read --prompt-file {args.prompt_file}: {exc.strerror}") from None
    backend = make_backend(base_url=args.base_url, model=args.model, local_model=args.local_model,
                           api_key_env=args.api_key_env, timeout=args.timeout, max_retries=args.max_retries,
                           backoff=args.backoff, temperature=args.temperature, max_tokens=args.max_tokens,
                           system=args.system, device=args.device)
    cache = RewriteCache(args.cache or f"{args.output}.llm-cache.jsonl")
    return backend, cache, template


def run_car(args: argparse.Namespace) -> int:
    from peft_ir.rewrite.car import CAR_PROMPT, car_file

    backend, cache, template = _setup(args)
    with cache:
        stats = car_file(args.train, args.output, backend, cache, shape=args.shape, template=template or CAR_PROMPT,
                         max_passage_chars=args.max_passage_chars, keep_original=args.keep_original,
                         workers=args.workers)
    print(f"rewrote {stats['rewritten']} of {stats['examples']} training queries "
          f"({stats['fallback']} kept as they were) into {args.output}; cache {cache.path}")
    return 0


def run_expand(args: argparse.Namespace) -> int:
    from peft_ir.data import load_topics, write_topics
    from peft_ir.rewrite.expansion import expand_topics

    topics = load_topics(args.topics, args.split)
    backend, cache, template = _setup(args)
    with cache:
        expanded = expand_topics(topics, args.mode, backend, cache, template=template, task=args.task,
                                 repeat=args.repeat, sep=args.sep, workers=args.workers)
    write_topics(expanded, args.output)
    print(f"expanded {len(expanded)} topics ({args.mode}) into {args.output}; cache {cache.path}")
    return 0
