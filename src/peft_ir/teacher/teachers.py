"""The three kinds of teacher, read from what the user has: a cross-encoder, a bi-encoder, or a fusion of runs.

`resolve_teacher` decides the kind and checks every path without loading a model (so bad input fails in
seconds); `load_teacher` then builds the scorer. How `--teacher PATH` is read:

- `fusion:RUN1,RUN2[,...]`: per-query min-max interpolation of TREC runs (indexing/fusion.py, weights 1/n
  unless `--teacher-weights`); a passage absent from a run gets that run's minimum (0 after normalisation).
- a folder with `cross_encoder.json` (a `peft-ir train reranker` output): its base model, token limits, head and
  head seed, with the folder's `adapter/`.
- a folder with `encoder.json` (a `peft-ir train retriever` output, or an encoded corpus): its EncoderSpec, with
  the folder's `adapter/` when it has one.
- any other model folder or cached hub name: a cross-encoder when its config names a `...ForSequenceClassification`
  architecture, else a bi-encoder (sentence-transformers folder, or a plain encoder with mean pooling);
  `--teacher-kind` overrides the guess for a plain folder.

Scores: a cross-encoder's logit, a bi-encoder's query-passage inner product (what its index ranks by), the fused
value. Scales differ between kinds; the scored file records which teacher wrote it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from peft_ir.data.textfile import read_json_object
from peft_ir.errors import InputError, PeftIRError
from peft_ir.fingerprint import file_hash
from peft_ir.models import hub_shaped, resolve_model
from peft_ir.precision import ComputeDtype, torch_dtype
from peft_ir.reranker.config import CROSS_ENCODER_SPEC_FILE, CrossEncoderSpec
from peft_ir.retriever.config import ENCODER_SPEC_FILE, EncoderSpec
from peft_ir.teacher.config import FUSION_PREFIX, TeacherConfig, fusion_runs
from peft_ir.training.checkpoints import CHECKPOINTS_DIR
from peft_ir.tuning.checkpoint import ADAPTER_DIR

Kind = Literal["cross-encoder", "bi-encoder", "fusion"]

log = logging.getLogger(__name__)

# Spec fields a trained teacher does not take from its record: the base model (TeacherSource.model, from model_path),
# the adapter (the folder beside the record), the attention implementation (this machine's choice) and extra.
NOT_CARRIED = frozenset({"model", "adapter", "attn_implementation", "extra"})
PASSAGE_CHUNK = 4096  # passages a bi-encoder teacher encodes and saves together (prepare): a kill redoes one chunk


@dataclass(frozen=True)
class Block:
    """One query and the passages to score for it: (docid, text) pairs, text being title and body joined."""

    qid: str
    query: str
    passages: list[tuple[str, str]]


class Teacher(Protocol):
    """A scorer. A teacher that needs the whole file first also has `prepare(passages, store, progress)`, called
    before `score` with every distinct (docid, text) in file order and a folder for resumable work
    (BiEncoderTeacher). A model teacher also has `log_truncated(queries, passages)`: how many its limits cut."""

    def fingerprint(self) -> str: ...

    def score(self, blocks: Sequence[Block]) -> list[list[float]]:
        """Scores aligned with each block's passages."""
        ...


@dataclass(frozen=True)
class TeacherSource:
    """A resolved teacher, before anything is loaded: what `<output>.teacher.json` records about it."""

    kind: Kind
    path: str
    model: str | None = None
    adapter: str | None = None
    spec: dict[str, Any] = field(default_factory=dict)  # the CrossEncoderSpec / EncoderSpec fields
    runs: tuple[str, ...] = ()
    weights: tuple[float, ...] | None = None
    scale: float = 1.0  # every score is multiplied by it (--teacher-scale)
    dtype: ComputeDtype = "float32"  # a model teacher's compute precision (--teacher-dtype)

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "path": self.path}
        if self.kind == "fusion":
            out |= {"runs": list(self.runs), "run_hashes": [file_hash(Path(r)) for r in self.runs],
                    "weights": list(self.weights) if self.weights else None, "norm": "minmax"}
        else:
            out |= {"model": self.model, "adapter": self.adapter, "spec": self.spec}
        if self.scale != 1.0:  # recorded only when set: records written before the setting existed stay current
            out["scale"] = self.scale
        if self.dtype != "float32":  # likewise
            out["dtype"] = self.dtype
        return out


def resolve_teacher(cfg: TeacherConfig) -> TeacherSource:
    """The teacher's kind and files, every path and setting checked; nothing is loaded."""
    if not cfg.teacher:
        raise PeftIRError("--teacher is required: a training output, a model folder or fusion:RUN1,RUN2")
    if cfg.teacher_batch_size < 1:
        raise PeftIRError(f"--teacher-batch-size must be at least 1, got {cfg.teacher_batch_size}")
    scale = cfg.teacher_scale
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 < scale < math.inf:
        raise PeftIRError(f"--teacher-scale must be a positive number, got {scale!r}")
    return dataclasses.replace(_resolve(cfg), scale=float(scale), dtype=cfg.teacher_dtype)


def _resolve(cfg: TeacherConfig) -> TeacherSource:
    for name in ("teacher_query_max_length", "teacher_passage_max_length"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise PeftIRError(f"--{name.replace('_', '-')} must be a positive number of tokens, got {value}")
    if cfg.is_fusion:
        return _fusion(cfg)
    if cfg.teacher_weights is not None:
        raise PeftIRError("--teacher-weights weighs the runs of a fusion:RUN1,RUN2 teacher; this teacher is a model")
    path = Path(resolve_model(cfg.teacher))
    if path.is_dir():
        if (path / CROSS_ENCODER_SPEC_FILE).is_file():
            return _trained(cfg, path, "cross-encoder", CROSS_ENCODER_SPEC_FILE)
        if (path / ENCODER_SPEC_FILE).is_file():
            return _trained(cfg, path, "bi-encoder", ENCODER_SPEC_FILE)
        config = path / "config.json"
        if not config.is_file() and (path / CHECKPOINTS_DIR).is_dir():
            raise InputError(path, None, None, f"an unfinished training ({CHECKPOINTS_DIR}/, but no "
                                               f"{CROSS_ENCODER_SPEC_FILE} or {ENCODER_SPEC_FILE} yet): run that "
                                               "training again to finish it (it resumes from its last checkpoint)")
        if not config.is_file():
            raise InputError(path, None, None, "not a model folder (no config.json), nor a training output "
                                               f"({CROSS_ENCODER_SPEC_FILE} or {ENCODER_SPEC_FILE})")
        architectures = read_json_object(config).get("architectures") or []
        where = str(path.resolve())
    elif path.exists():
        raise InputError(path, None, None, "a teacher is a folder (training output or model) or fusion:RUN1,RUN2")
    elif not hub_shaped(str(cfg.teacher)):
        raise InputError(path, None, None, "no such folder (a path, not a Hub name): a teacher is a training output, "
                                           "a model folder or a Hub name, or fusion:RUN1,RUN2")
    else:
        architectures = _hub_architectures(cfg.teacher)
        where = cfg.teacher
    has_head = any(a.endswith("ForSequenceClassification") for a in architectures)
    kind: Kind = cfg.teacher_kind if cfg.teacher_kind != "auto" else ("cross-encoder" if has_head else "bi-encoder")
    if kind == "cross-encoder" and not has_head:
        log.warning("teacher %s has no classification head: a new, untrained head (seed %d) scores, so its scores "
                    "carry no relevance signal", where, CrossEncoderSpec().seed)
    spec = _lengths(cfg, {})
    return TeacherSource(kind, where, model=where, spec=spec)


def _fusion(cfg: TeacherConfig) -> TeacherSource:
    if cfg.teacher_kind != "auto":
        raise PeftIRError(f"--teacher-kind {cfg.teacher_kind} does not apply to a fusion teacher")
    if cfg.teacher_dtype != "float32":
        raise PeftIRError(f"--teacher-dtype {cfg.teacher_dtype} is a model teacher's precision; a fusion teacher "
                          "reads scores from its runs")
    runs = fusion_runs(cfg.teacher)
    if runs is None or len(runs) < 2 or not all(runs):
        raise PeftIRError(f"--teacher {cfg.teacher!r}: a fusion teacher needs two or more run files, "
                          "fusion:RUN1,RUN2[,...]")
    for r in runs:
        if not Path(r).is_file():
            raise InputError(r, None, None, "fusion teacher: run file not found")
    weights = cfg.teacher_weights
    if weights is not None:
        if len(weights) != len(runs):
            raise PeftIRError(f"--teacher-weights: got {len(weights)} weight(s) for {len(runs)} runs")
        if not all(math.isfinite(w) for w in weights):
            raise PeftIRError(f"--teacher-weights must be finite numbers, got {weights}")
    resolved = tuple(str(Path(r).resolve()) for r in runs)
    return TeacherSource("fusion", FUSION_PREFIX + ",".join(resolved), runs=resolved,
                         weights=tuple(weights) if weights is not None else None)


def _trained(cfg: TeacherConfig, folder: Path, kind: Kind, spec_file: str) -> TeacherSource:
    """A training output: its recorded spec, the adapter beside it (the recorded path may be relative to another
    working directory). Looser on purpose than export's `read_trained`, which wants a finished training output:
    an encoded corpus's encoder.json (no adapter, no summary.json, manifest keys) teaches too."""
    if cfg.teacher_kind not in ("auto", kind):
        raise PeftIRError(f"--teacher {folder} is a {kind} training output ({spec_file}), not a {cfg.teacher_kind}")
    recorded = read_json_object(folder / spec_file)
    adapter = folder / ADAPTER_DIR if (folder / ADAPTER_DIR).is_dir() else recorded.get("adapter")
    if adapter is not None and not Path(adapter).is_dir():
        raise InputError(folder / spec_file, None, "adapter", f"the adapter folder {adapter} does not exist")
    spec_cls = CrossEncoderSpec if kind == "cross-encoder" else EncoderSpec
    keys = [f.name for f in dataclasses.fields(spec_cls) if f.name not in NOT_CARRIED]
    spec = _lengths(cfg, {k: recorded[k] for k in keys if k in recorded})
    model = recorded.get("model_path") or recorded.get("model")
    return TeacherSource(kind, str(folder.resolve()), model=model,
                         adapter=str(Path(adapter).resolve()) if adapter else None, spec=spec)


def _lengths(cfg: TeacherConfig, spec: dict[str, Any]) -> dict[str, Any]:
    if cfg.teacher_query_max_length is not None:
        spec["query_max_length"] = cfg.teacher_query_max_length
    if cfg.teacher_passage_max_length is not None:
        spec["passage_max_length"] = cfg.teacher_passage_max_length
    return spec


def _hub_architectures(name: str) -> list[str]:
    """A hub name's architectures from the local cache (offline): enough to tell a cross-encoder."""
    from transformers import AutoConfig  # noqa: PLC0415

    try:
        return list(AutoConfig.from_pretrained(name).architectures or [])
    except (OSError, ValueError) as exc:
        raise PeftIRError(f"--teacher {name!r} is neither a folder, nor fusion:RUN1,RUN2, nor a hub model in the "
                          f"local cache ({str(exc).splitlines()[0]})") from None


# --- the scorers ---------------------------------------------------------------------------------------------


class CrossEncoderTeacher:
    def __init__(self, source: TeacherSource, device: str, batch_size: int):
        from peft_ir.reranker.model import CrossEncoder  # noqa: PLC0415

        self.encoder = CrossEncoder(CrossEncoderSpec(model=source.model, **source.spec), adapter=source.adapter,
                                    device=device, dtype=torch_dtype(source.dtype))
        self.batch_size = batch_size

    def fingerprint(self) -> str:
        return self.encoder.fingerprint()

    def log_truncated(self, queries: Sequence[str], passages: Sequence[str]) -> None:
        self.encoder.log_truncated(queries, passages, "teacher")

    def score(self, blocks: Sequence[Block]) -> list[list[float]]:
        queries = [b.query for b in blocks for _ in b.passages]
        texts = [t for b in blocks for _, t in b.passages]
        flat = iter(self.encoder.score(queries, texts, self.batch_size))
        return [[next(flat) for _ in b.passages] for b in blocks]


class BiEncoderTeacher:
    """Inner products of query and passage vectors. `prepare` encodes every distinct passage of the whole file once,
    in fixed chunks kept on disk (a training file reuses a pool of passages across its queries: MS MARCO-style files
    repeat each passage some thirty times); `score` then encodes only the queries."""

    def __init__(self, source: TeacherSource, device: str, batch_size: int):
        from peft_ir.retriever.config import EncoderSpec  # noqa: PLC0415
        from peft_ir.retriever.encoder import BiEncoder  # noqa: PLC0415

        self.encoder = BiEncoder(EncoderSpec(model=source.model, adapter=source.adapter, **source.spec), device=device,
                                 dtype=torch_dtype(source.dtype))
        self.batch_size = batch_size
        self._rows: dict[str, int] | None = None  # docid -> row of the prepared passage vectors
        self._chunks: list[Any] = []

    def fingerprint(self) -> str:
        from peft_ir.fingerprint import manifest_fingerprint  # noqa: PLC0415

        manifest = self.encoder.manifest()
        lengths = f"/{manifest['query_max_length']}/{manifest['passage_max_length']}"
        dtype = "" if self.encoder.compute_dtype == "float32" else f"/{self.encoder.compute_dtype}"
        return manifest_fingerprint(manifest) + lengths + dtype

    def log_truncated(self, queries: Sequence[str], passages: Sequence[str]) -> None:
        for kind, texts in (("query", list(dict.fromkeys(queries))), ("passage", list(dict.fromkeys(passages)))):
            if texts:
                self.encoder.log_truncated(self.encoder.count_truncated(texts, kind), len(texts), kind, "teacher")

    def prepare(self, passages: Sequence[tuple[str, str]], store: Path, progress: bool = False) -> None:
        """Encode `passages` (distinct docids, in a fixed order) in chunks of PASSAGE_CHUNK, each saved in `store`
        when complete and reused by a later call: chunk k holds the same texts in every run, hence the same
        vectors, so a resumed annotation scores as an uninterrupted one."""
        import numpy as np  # noqa: PLC0415
        from tqdm.auto import tqdm  # noqa: PLC0415

        from peft_ir.atomic import atomic_open  # noqa: PLC0415

        store.mkdir(parents=True, exist_ok=True)
        self._rows = {docid: i for i, (docid, _) in enumerate(passages)}
        self._chunks = []
        starts = range(0, len(passages), PASSAGE_CHUNK)
        with tqdm(total=len(passages), unit="passage", desc="teacher: encode passages", disable=not progress) as bar:
            for k, start in enumerate(starts):
                texts = [t for _, t in passages[start:start + PASSAGE_CHUNK]]
                path = store / f"{k:05d}.npy"
                if not _chunk_ok(path, len(texts)):
                    with atomic_open(path, "wb") as fh:
                        np.save(fh, self.encoder.encode_passages(texts, self.batch_size).astype(np.float32))
                self._chunks.append(np.load(path, mmap_mode="r"))
                bar.update(len(texts))

    def score(self, blocks: Sequence[Block]) -> list[list[float]]:
        """Inner products with the passage vectors of `prepare`, which must have seen every passage of `blocks`."""
        rows, chunks = self._rows, self._chunks
        if rows is None:
            raise RuntimeError("BiEncoderTeacher.score before prepare: the passages are encoded by prepare")
        q = self.encoder.encode_queries([b.query for b in blocks], self.batch_size)

        def vector(docid: str) -> Any:
            row = rows[docid]
            return chunks[row // PASSAGE_CHUNK][row % PASSAGE_CHUNK]
        return [[float(q[i] @ vector(d)) for d, _ in b.passages] for i, b in enumerate(blocks)]


def _chunk_ok(path: Path, rows: int) -> bool:
    """A saved chunk of passage vectors that is whole (written atomically, so only a wrong length is possible)."""
    import numpy as np  # noqa: PLC0415

    if not path.is_file():
        return False
    try:
        return np.load(path, mmap_mode="r").shape[0] == rows
    except (OSError, ValueError):
        return False


class FusionTeacher:
    def __init__(self, source: TeacherSource):
        from peft_ir.data import read_run  # noqa: PLC0415
        from peft_ir.indexing.fusion import interpolate  # noqa: PLC0415

        self.source = source
        runs = [read_run(r) for r in source.runs]
        for path, run in zip(source.runs, runs):
            if not run:
                raise InputError(path, None, None, "fusion teacher: empty run")
        self.fused = interpolate(runs, weights=source.weights, norm="minmax")

    def fingerprint(self) -> str:
        return file_hash_of_runs(self.source)

    def score(self, blocks: Sequence[Block]) -> list[list[float]]:
        """A passage that no run retrieved for the query scores 0: every run's minimum, after normalisation."""
        return [[self.fused.get(b.qid, {}).get(d, 0.0) for d, _ in b.passages] for b in blocks]


def file_hash_of_runs(source: TeacherSource) -> str:
    return ",".join(file_hash(Path(r)) for r in source.runs) + f"|{list(source.weights or [])}"


def load_teacher(source: TeacherSource, device: str = "cpu", batch_size: int = 32) -> Teacher:
    if source.kind == "fusion":
        return FusionTeacher(source)
    if source.kind == "cross-encoder":
        return CrossEncoderTeacher(source, device, batch_size)
    return BiEncoderTeacher(source, device, batch_size)
