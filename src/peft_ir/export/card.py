"""The model card (README.md in the Hub's format) that travels with every export.

Front matter by huggingface_hub's ModelCardData (base_model, library_name, tags, license, pipeline_tag, and the
evaluation as model-index results with the exact values of metrics.json); the body says what the model is (base
model and its peft-ir fingerprint, method, sizes, trainable share), how it was trained (summary.json: data,
steps, dev selection; the training command), how it scored (the run folder's metrics.json), how to load it and
the command that exported it.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

from peft_ir.export.source import OWN_RUNS, TrainedModel
from peft_ir.models import hub_id, resolve_model
from peft_ir.settings import flat_fields

UNKNOWN_LICENSE = "unknown"
# Settings left out of the training command: chosen by --method/--tuning, or how a run was watched, not what it trained.
NOT_IN_COMMAND = ("tuning", "adapter", "extra", "resume", "progress", "report_to")
LIBRARIES = {"sentence-transformers": "sentence-transformers", "cross-encoder": "sentence-transformers",
             "hf": "transformers", "peft": "peft"}


def base_license(model: TrainedModel) -> str | None:
    """The licence the base model's own card states (README.md front matter of its folder, or of its copy in the
    Hugging Face cache for a hub name), else None."""
    from huggingface_hub import ModelCard, try_to_load_from_cache  # noqa: PLC0415

    readme = Path(resolve_model(model.spec.model)) / "README.md"
    if not readme.is_file():
        name = hub_id(model.spec.model)
        cached = try_to_load_from_cache(name, "README.md") if name else None
        if not isinstance(cached, str):
            return None
        readme = Path(cached)
    try:
        license_ = ModelCard.load(readme).data.license
    except Exception:  # a card that does not parse states no licence we can rely on
        return None
    return str(license_) if license_ else None


def metric_type(measure: str) -> str:
    """An ir-measures name as a model-index metric type: nDCG@10 -> ndcg_at_10, RR(rel=2)@10 -> rr_rel_2_at_10."""
    return re.sub(r"[^a-z0-9]+", "_", measure.lower().replace("@", "_at_")).strip("_")


def eval_results(model: TrainedModel) -> list[Any]:
    """model-index entries: this model's own runs (a retriever's dense run; a re-ranker's re-ranked runs) per test
    set and measure, with metrics.json's exact means."""
    from huggingface_hub import EvalResult  # noqa: PLC0415

    if not model.metrics:
        return []
    task = "information-retrieval" if model.kind == "retriever" else "reranking"
    out = []
    for name, body in model.metrics["sets"].items():
        for kind in OWN_RUNS[model.kind]:
            run = body["runs"].get(kind)
            for measure, value in (run or {}).get("means", {}).items():
                source = str(body.get("qrels") or name)
                dataset = source if source.startswith("irds:") else Path(source).name
                out.append(EvalResult(task_type=task, task_name=f"{kind} run", dataset_type=dataset, dataset_name=name,
                                      dataset_split=body.get("split"), metric_type=metric_type(measure),
                                      metric_name=measure, metric_value=value))
    return out


def front_matter(model: TrainedModel, fmt: str, merged: bool, license_: str | None, name: str) -> str:
    from huggingface_hub import ModelCardData  # noqa: PLC0415

    kind_tags = ["retrieval", "bi-encoder"] if model.kind == "retriever" else ["reranking", "cross-encoder"]
    how = "merged" if merged else ("peft-adapter" if fmt == "peft" else "peft-ir-module")
    tags = ["peft-ir", f"peft-ir-{model.method}", *kind_tags, how]
    if fmt in ("sentence-transformers", "cross-encoder"):
        tags.insert(0, "sentence-transformers")
    results = eval_results(model)
    data = ModelCardData(
        base_model=hub_id(model.spec.model), library_name=LIBRARIES[fmt], tags=tags,
        license=license_ or UNKNOWN_LICENSE,
        pipeline_tag="sentence-similarity" if model.kind == "retriever" else "text-ranking",
        model_name=name if results else None, eval_results=results or None)
    return f"---\n{data.to_yaml()}\n---\n"


def _table(rows: list[tuple[str, str]]) -> list[str]:
    return ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), ""]


def _share(value: Any) -> str:
    return f"{value:.3%}" if isinstance(value, (int, float)) else "?"


def train_command(model: TrainedModel) -> str | None:
    """`peft-ir train retriever|reranker` with the settings summary.json recorded (those not at their default)."""
    from peft_ir.reranker.config import RerankerTrainConfig  # noqa: PLC0415
    from peft_ir.retriever.config import RetrieverTrainConfig  # noqa: PLC0415

    config = model.summary.get("config")
    if not isinstance(config, dict):
        return None
    cls = RetrieverTrainConfig if model.kind == "retriever" else RerankerTrainConfig
    words = ["peft-ir", "train", model.kind]
    for f in flat_fields(cls, skip=NOT_IN_COMMAND):
        value: Any = config
        for part in f.path:
            value = value.get(part) if isinstance(value, dict) else None
        default = None if f.required else json.loads(json.dumps(f.default(), default=str))
        if value is None or value == default:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + f.name.replace("_", "-"))
        elif isinstance(value, list):
            words += [flag, *map(str, value)]
        else:
            words += [flag, str(value)]
    sizes = model.tuning.sizes()  # what the checkpoint was tuned with (a budget resolved to its sizes)
    words += ["--method", model.method]
    if sizes:
        words += ["--tuning", *(f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in sizes.items())]
    return shlex.join(words)


def usage(model: TrainedModel, fmt: str, merged: bool) -> str:
    """How to load this folder, in the library its format is for."""
    base = hub_id(model.spec.model) or model.base_name
    if fmt in ("sentence-transformers", "cross-encoder") and not merged:
        cls = "SentenceTransformer" if model.kind == "retriever" else "CrossEncoder"
        call = ("model.encode_query([\"a query\"]), model.encode_document([\"a passage\"])"
                if model.kind == "retriever" else "model.predict([(\"a query\", \"a passage\")])")
        return ("Needs peft-ir installed (its module class rebuilds the base and applies the tuning; nothing in "
                "this folder is code):\n\n```python\nfrom peft_ir.export import load_model\n\n"
                f"model = load_model(\"PATH\")  # a sentence-transformers {cls}\n"
                f"{call}\n```\n\n`{cls}(\"PATH\")` with the `trust_remote_code` flag on loads it too: "
                "sentence-transformers ≥ 6 "
                "asks for that flag for any module class outside its own package, and the folder holds no code, so "
                "it imports only the installed peft-ir class.")
    if fmt == "sentence-transformers":
        return ("```python\nfrom sentence_transformers import SentenceTransformer\n\n"
                "model = SentenceTransformer(\"PATH\")\nq = model.encode_query([\"a query\"])\n"
                "d = model.encode_document([\"a passage\"])\nscores = model.similarity(q, d)\n```")
    if fmt == "cross-encoder":
        return ("```python\nfrom sentence_transformers import CrossEncoder\n\nmodel = CrossEncoder(\"PATH\")\n"
                "scores = model.predict([(\"a query\", \"a passage\")])  # raw logits, as peft-ir scores "
                "(activation Identity)\n```")
    if fmt == "hf":
        if model.kind == "reranker":
            return ("```python\nfrom transformers import AutoModelForSequenceClassification, AutoTokenizer\n\n"
                    "model = AutoModelForSequenceClassification.from_pretrained(\"PATH\")  # one logit\n"
                    "tokenizer = AutoTokenizer.from_pretrained(\"PATH\")\n"
                    "score = model(**tokenizer(\"a query\", \"a passage\", return_tensors=\"pt\")).logits[0, 0]\n```")
        spec = model.spec
        return (f"```python\nfrom transformers import AutoModel, AutoTokenizer\n\nmodel = AutoModel.from_pretrained("
                f"\"PATH\")\ntokenizer = AutoTokenizer.from_pretrained(\"PATH\")\n```\n\nEmbeddings: "
                f"{getattr(spec, 'pooling', None) or 'mean'} pooling of the last hidden states"
                f"{', then L2 normalisation' if getattr(spec, 'normalize', None) is not False else ''}.")
    head = "AutoModelForSequenceClassification" if model.kind == "reranker" else "AutoModel"
    extra = ", num_labels=1" if model.kind == "reranker" else ""
    text = (f"```python\nfrom peft import PeftModel\nfrom transformers import {head}\n\n"
            f"model = PeftModel.from_pretrained({head}.from_pretrained(\"{base}\"{extra}), \"PATH\")\n```")
    if model.kind == "retriever":
        text += ("\n\nor in sentence-transformers:\n\n```python\nfrom sentence_transformers import "
                 f"SentenceTransformer\n\nmodel = SentenceTransformer(\"{base}\")\nmodel.load_adapter(\"PATH\")\n```")
    else:
        text += "\n\nThe classification head is in the adapter (`modules_to_save`): the base's own head is replaced."
    return text


def model_card(model: TrainedModel, fmt: str, merged: bool, command: str | None = None) -> str:
    """README.md of an export."""
    s, spec = model.summary, model.spec
    what = "bi-encoder retriever" if model.kind == "retriever" else "cross-encoder re-ranker"
    base = hub_id(spec.model) or model.base_name
    license_ = base_license(model)
    name = f"{model.run_dir.root.name if model.run_dir else model.root.name}-{model.kind}"
    form = ("merged weights" if merged else "a peft adapter" if fmt == "peft"
            else "the base weights plus peft-ir's tuning modules")
    lines = [front_matter(model, fmt, merged, license_, name),
             f"# {name}: {model.method} {what}", "",
             f"A {what} on `{base}` tuned with **{model.method}** by "
             f"peft-ir ({_share(s.get('share'))} of the base's parameters trained), exported "
             f"as a **{fmt}** folder holding {form}.", "",
             "## Model", ""]
    rows = [("base model", f"`{base}`"), ("base weights fingerprint (peft-ir sha256_sampled)",
                                         f"`{model.base_fingerprint}`"),
            ("licence", f"{license_} (the base model's)" if license_ else
             "unknown: the base model's card states none; check the base model's terms"),
            ("method", model.method),
            ("sizes", ", ".join(f"{k}={v}" for k, v in model.tuning.sizes().items()) or "none"),
            ("trainable parameters", f"{s.get('trainable', 0):,} of {s.get('total', 0):,} base parameters "
                                     f"({_share(s.get('share'))})")]
    if model.kind == "reranker":
        rows += [("method share / head share", f"{_share(s.get('method_share'))} / {_share(s.get('head_share'))}")]
        rows += [("token limits", f"query {spec.query_max_length}, passage {spec.passage_max_length}")]
    else:
        rows += [("pooling, normalised", f"{spec.pooling or 'as the base folder says'}, "
                                         f"{'as the base folder says' if spec.normalize is None else spec.normalize}"),
                 ("token limits", f"query {spec.query_max_length or 'the model limit'}, passage "
                                  f"{spec.passage_max_length}")]
        if spec.query_prefix or spec.passage_prefix:
            rows += [("prefixes (prompts)", f"query {spec.query_prefix!r}, passage {spec.passage_prefix!r}")]
    lines += _table(rows)

    config = s.get("config") if isinstance(s.get("config"), dict) else {}
    lines += ["## Training", ""]
    examples = s.get("train_examples", s.get("train_groups"))
    rows = [("training data", f"`{config.get('train')}` (split {config.get('split')})"),
            ("steps", str(s.get("steps"))),
            ("training rows", str(examples)),
            ("loss", str(s.get("loss"))),
            ("dev queries", str(s.get("dev_queries"))),
            ("selection", str(s.get("selection"))
             + (f", {s['dev_metric']} {s['best_dev']:.4f}" if isinstance(s.get("best_dev"), float) else "")),
            ("training wall time", f"{s.get('wall_seconds', 0):.0f} s")]
    lines += _table(rows)
    train = train_command(model)
    if model.run_dir is not None:
        lines += [f"Trained by `peft-ir run` in run folder `{model.run_dir.root.name}` (its config.resolved.yaml, "
                  f"`{model.kind}` section); the same training alone:", ""]
    elif train:
        lines += ["Trained by:", ""]
    if train:
        lines += ["```bash", train, "```", ""]

    lines += ["## Evaluation", ""]
    if model.metrics:
        from peft_ir.eval import metrics_table  # noqa: PLC0415

        present = {kind for body in model.metrics["sets"].values() for kind in body["runs"]}
        own = ", ".join(f"`{k}`" for k in OWN_RUNS[model.kind] if k in present) or "none"
        lines += [f"From the run folder's metrics.json (`{model.run_dir.root.name if model.run_dir else ''}`; judged "
                  f"by its `{model.metrics.get('final')}` run). This model's own runs: {own}; the others are the "
                  "experiment's other stages, for comparison.", ""]
        for set_name, body in model.metrics["sets"].items():
            lines += [f"### {set_name} ({body.get('split') or 'test'})", "",
                      metrics_table({kind: r["means"] for kind, r in body["runs"].items()}).rstrip(), ""]
    else:
        lines += ["No evaluation travels with this model: it was trained outside `peft-ir run`, or its run has not "
                  "been evaluated yet.", ""]

    lines += ["## Usage", "", "`PATH`: this folder, or its Hub id once uploaded.", "", usage(model, fmt, merged), ""]
    if model.kind == "reranker" and fmt != "peft":
        lines += [f"Equal to peft-ir's scores (within 1e-5) for pairs that fit the token limits; peft-ir cuts query "
                  f"and passage separately (query {spec.query_max_length}, passage {spec.passage_max_length}), "
                  "transformers and sentence-transformers cut a longer pair as a whole (longest first).", ""]
    if model.kind == "reranker" and (spec.query_prefix or spec.passage_prefix):
        lines += [f"**Prefixes.** This re-ranker was trained and scores with every query prefixed by "
                  f"`{spec.query_prefix!r}` and every passage by `{spec.passage_prefix!r}`: prepend them to each "
                  "pair yourself (the folder's tokenizer does not); without them its scores differ.", ""]
    if command:
        lines += ["## Made by", "", "```bash", command, "```", ""]
    return "\n".join(lines)
