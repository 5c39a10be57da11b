"""`peft-ir encode`, `peft-ir index`, `peft-ir search`: the dense first stage."""

from __future__ import annotations

import argparse
import os
from typing import get_args

from peft_ir.cli.flags import add_flags, config_from_args
from peft_ir.devices import DEVICE_CHOICES, parse_device
from peft_ir.indexing.config import IndexConfig, SearchConfig
from peft_ir.precision import ComputeDtype
from peft_ir.retriever.config import EncodeConfig, EncoderSpec


def add_query_encoder_flags(p: argparse.ArgumentParser) -> None:
    """Search-time flags: the query encoder (by default the index's), its precision and an --nprobe override."""
    p.add_argument("--model", default=None, help="query encoder (default: the one recorded in the index)")
    p.add_argument("--adapter", default=None, help="query-side adapter (default: the one recorded in the index)")
    p.add_argument("--dtype", choices=get_args(ComputeDtype), default=None,
                   help="the query encoder's compute precision, as encode's --dtype (default: the corpus's, recorded "
                        "in the index, float32 for a float16 corpus on the CPU; a warning says when it differs)")
    p.add_argument("--nprobe", type=int, default=None,
                   help="IVF lists probed per query (default: the one recorded when the index was built); IVF "
                        "indexes only")


def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("encode", help="encode a corpus into resumable embedding chunks")
    e.add_argument("--corpus", required=True, help="BEIR folder or corpus.jsonl, MS MARCO collection.tsv, irds:ID")
    e.add_argument("--output", required=True, help="embeddings folder (re-running resumes)")
    add_flags(e, EncoderSpec, skip=("extra",))
    add_flags(e, EncodeConfig)
    e.add_argument("--shard-id", type=int, default=None, help="default: $RANK under torchrun, else 0")
    e.add_argument("--num-shards", type=int, default=None, help="default: $WORLD_SIZE under torchrun, else 1")
    e.add_argument("--device", type=parse_device, default="auto",
                   help=f"{DEVICE_CHOICES}; auto: the GPU of $LOCAL_RANK under torchrun, else a GPU if torch sees "
                        "one, else the CPU")
    e.set_defaults(func=run_encode)

    i = sub.add_parser("index", help="build a FAISS index from embeddings")
    i.add_argument("--embeddings", required=True, help="folder written by `peft-ir encode`")
    i.add_argument("--index", required=True, help="index folder to write")
    add_flags(i, IndexConfig)
    i.set_defaults(func=run_index)

    s = sub.add_parser("search", help="search a dense index with topics and write a TREC run")
    s.add_argument("--index", required=True, nargs="+", help="index folder(s); several shards are merged exactly")
    s.add_argument("--topics", required=True, help="topics tsv, queries.jsonl, BEIR folder (with --split) or irds:ID")
    s.add_argument("--split", default="test")
    s.add_argument("--output", required=True, help="TREC run to write")
    add_flags(s, SearchConfig)
    add_query_encoder_flags(s)
    s.add_argument("--tag", default="peft-ir-dense", help="run tag (6th column)")
    s.set_defaults(func=run_search)


def run_encode(args: argparse.Namespace) -> int:
    from peft_ir.data import iter_documents
    from peft_ir.devices import device_for_process
    from peft_ir.precision import torch_dtype
    from peft_ir.retriever.encode import encode_corpus
    from peft_ir.retriever.encoder import BiEncoder

    # `torchrun --nproc_per_node N -m peft_ir.cli encode ...`: rank r encodes shard r of N on its own GPU
    shard_id = args.shard_id if args.shard_id is not None else int(os.environ.get("RANK", "0"))
    num_shards = args.num_shards if args.num_shards is not None else int(os.environ.get("WORLD_SIZE", "1"))
    encoder = BiEncoder(config_from_args(EncoderSpec, args), device=device_for_process(args.device),
                        dtype=torch_dtype(args.dtype))
    manifest = encode_corpus(encoder, iter_documents(args.corpus), args.output, shard_id=shard_id,
                             num_shards=num_shards, chunk_size=args.chunk_size, batch_size=args.batch_size)
    print(f"encoded shard {shard_id}/{num_shards} of {manifest['num_docs']} documents into {args.output}")
    return 0


def run_index(args: argparse.Namespace) -> int:
    from peft_ir.indexing.dense import build_index

    m = build_index(args.embeddings, args.index, args.factory, train_sample=args.train_sample, nprobe=args.nprobe)
    nprobe = f", nprobe {m['nprobe']}" if "nprobe" in m else ""
    print(f"indexed {m['ntotal']} vectors ({m['factory']}, dim {m['dim']}{nprobe}) into {args.index}")
    return 0


def run_search(args: argparse.Namespace) -> int:
    from peft_ir.data import load_topics, write_run
    from peft_ir.indexing.search import dense_search, encoder_for, load_shards

    shards = load_shards(args.index, args.device, args.nprobe, fp16=args.fp16_index)
    encoder = encoder_for(shards, args.model, args.adapter, args.dtype)
    run = dense_search(encoder, shards, load_topics(args.topics, args.split), args.hits, args.batch_size)
    write_run(run, args.output, tag=args.tag, hits=args.hits)
    nprobe = f", nprobe {shards[0].nprobe}" if shards[0].nprobe is not None else ""
    print(f"wrote {sum(len(h) for h in run.values())} hits for {len(run)} queries to {args.output} "
          f"({shards[0].backend}{nprobe})")
    return 0
