"""`peft-ir tuning describe`: show a PEFT method's sizes, trainable count/share and placements on a model.

Only the model's structure is needed, so the model is built from its config on the meta device (no weights are
read): `--model bert-base-config` shows the paper's BERT-base budgets offline.
"""

from __future__ import annotations

import argparse
from typing import Any

from peft_ir.models import BERT_BASE_CONFIG


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tuning", help="parameter-efficient tuning methods")
    sub = parser.add_subparsers(dest="tuning_command", required=True, metavar="SUBCOMMAND")
    d = sub.add_parser(
        "describe",
        help="sizes, trainable count and share, and placements of a method on a model",
        description=__doc__.splitlines()[0],
    )
    d.add_argument(
        "--model",
        default=None,
        help="local path or hub name of a model whose model_type is in the architecture table (BERT family, "
        "ModernBERT, Llama, Qwen2/3, Mistral, ...; default: the embedded all-MiniLM-L6-v2); "
        f"'{BERT_BASE_CONFIG}' builds BERT-base from transformers.BertConfig() without weights",
    )
    d.add_argument("--method", required=True, help="full, bitfit, adapter, parallel, prefix, lora, mam, iaa-s/l/m")
    d.add_argument("--budget", help="target trainable share, e.g. 0.5%% or 0.005 (chooses the free sizes)")
    d.add_argument("--cross-encoder", action="store_true",
                   help="describe the sequence-classification variant (a cross-encoder with the classifier head; one "
                        "with the cosine head has no head of its own: leave this off)")
    d.add_argument("--r", type=int, help="adapter / parallel adapter bottleneck")
    d.add_argument("--ar", type=int, help="aside module bottleneck")
    d.add_argument("--prefix-len", type=int, help="prefix length l")
    d.add_argument("--lora-r", type=int, help="LoRA rank")
    d.add_argument("--lora-alpha", type=float, help="LoRA alpha")
    d.add_argument("--target-modules", help="comma-separated LoRA targets (default: the family's, e.g. "
                   "query,value for BERT, q_proj,v_proj for Llama)")
    d.add_argument("--scaling", type=float, help="parallel adapter scale s")
    d.add_argument("--aside", choices=["layer", "sublayer", "model"], help="attach aside modules to the method")
    d.set_defaults(func=run_describe)


def _sizes(args: argparse.Namespace) -> dict[str, Any]:
    sizes = {
        "r": args.r,
        "ar": args.ar,
        "prefix_len": args.prefix_len,
        "lora_r": args.lora_r,
        "lora_alpha": args.lora_alpha,
        "scaling": args.scaling,
        "aside": args.aside,
        "target_modules": [t.strip() for t in args.target_modules.split(",") if t.strip()]
        if args.target_modules
        else None,
    }
    return {k: v for k, v in sizes.items() if v is not None}


def run_describe(args: argparse.Namespace) -> int:
    from peft_ir.tuning import TuningConfig, describe
    from peft_ir.tuning.budget import budget_choice
    from peft_ir.tuning.structure import model_structure

    model = model_structure(args.model, args.cross_encoder)
    sizes = _sizes(args)
    note = None
    if args.budget:
        choice = budget_choice(model, args.method, args.budget, **sizes)
        config, note = choice.config, choice.note
    else:
        config = TuningConfig(method=args.method, **sizes)
    print(describe(model, config, budget_note=note))
    return 0
