"""`peft-ir rewrite car` (training-time CAR rewriting) and `peft-ir rewrite expand` (query2doc / HyDE topics)."""

from __future__ import annotations

import argparse
from pathlib import Path


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
