"""Run an experiment config stage by stage with the library's own functions, resumably.

Stages (only those the config needs): training data -> BM25 index -> BM25 run of the training queries (hard
negatives, teacher) -> train retriever -> encode -> index -> dense search -> BM25 search -> fuse -> train reranker ->
re-rank -> evaluate. A teacher section adds its stages (the untrained start model's encoding, index and dense run of
the training queries, the fusion of its runs, the scored file) just before the first training that reads them.
A stage is skipped when all its outputs exist; every output is written atomically, so an existing output is a
complete one. Inside a stage the library resumes on its own (training from its last
complete checkpoint, encoding from its finished chunks, re-ranking from its score cache), so re-running
`peft-ir run` after a kill continues where it stopped.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peft_ir.errors import PeftIRError
from peft_ir.experiment.config import AUTO, DEV_SET, RERANKED, RERANKED_FUSED, ExperimentConfig, ModelSection, TestSet
from peft_ir.experiment.evaluation import evaluate_runs, fuse_measure, rerank_input_kind, write_run_report
from peft_ir.experiment.expect import check_expected
from peft_ir.experiment.rundir import RunDir
from peft_ir.experiment.tuning import resolve_tuning
from peft_ir.precision import torch_dtype
from peft_ir.settings import from_flat, to_flat
from peft_ir.teacher.config import FUSION_PREFIX
from peft_ir.training.checkpoints import SUMMARY_FILE

log = logging.getLogger(__name__)
LOGGERS = ("peft_ir", "peft_ir.metrics")  # log.txt gets our messages and the trainers' metric events


@dataclass
class Stage:
    title: str
    outputs: list[Path]                 # the stage is complete when every one exists
    action: Callable[[], None]
    current: Callable[[], bool] | None = None  # and, for an output shared beyond the run folder, still this config's

    def done(self) -> bool:
        return all(p.exists() for p in self.outputs) and (self.current is None or self.current())


class Pipeline:
    """One experiment's stages over one run folder; heavy models are loaded once, on first use."""

    def __init__(self, cfg: ExperimentConfig, *, progress: bool = True, echo: Callable[[str], None] = print):
        self.cfg = cfg
        self.dir = RunDir.of(cfg)
        self.progress = progress
        self._echo = echo
        self._bi_encoder: Any = None
        self._start_encoder: Any = None  # the teacher's: the retriever's model untrained
        self._cross_encoder: Any = None
        self._bm25: Any = None

    # -- planning -----------------------------------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        cfg, d = self.cfg, self.dir
        kinds = cfg.run_kinds()
        tests = cfg.data.test
        out: list[Stage] = []
        if cfg.data.build_train_from and (cfg.trains(cfg.retriever) or cfg.trains(cfg.reranker)):
            out.append(Stage(f"training data with BM25 negatives from {cfg.data.build_train_from}",
                             [Path(cfg.data.train)], self._build_training_data,  # type: ignore[arg-type]
                             current=self._training_data_current))
        if "bm25" in kinds or "bm25" in self._train_run_kinds():
            out.append(Stage("BM25 index of the corpus", [d.bm25_index], self._bm25_index))
        if "bm25" in self._train_run_kinds():
            uses = [u for u, used in (("hard negatives", "bm25" in self._train_run_kinds(negatives_only=True)),
                                      ("the teacher's", "bm25" in cfg.teacher_run_kinds())) if used]
            out.append(Stage(f"BM25 run of the training queries ({', '.join(uses)})", [d.run_file("train", "bm25")],
                             lambda: self._bm25_search([self._train_set()])))
        if cfg.teacher is not None and cfg.distils(cfg.retriever):  # else it distils a scored file given as data
            out += self._teacher_stages()
        if cfg.trains(cfg.retriever):
            out.append(Stage(f"train retriever: {_describe(cfg.retriever)}", [d.retriever / SUMMARY_FILE],
                             self._train_retriever))
        if "dense" in kinds:
            out.append(Stage(f"encode the corpus (max length {cfg.encode.max_length})", [d.embeddings / "manifest.json"],
                             self._encode))
            out.append(Stage(f"index (FAISS {cfg.index.factory})", [d.index / "manifest.json"], self._index))
            sets = tests + ([self._train_set()] if "dense" in self._train_run_kinds() else [])
            out.append(Stage(f"dense search, top {cfg.search.hits}", [d.run_file(t.name, "dense") for t in sets],
                             lambda: self._dense_search(sets)))
        if "bm25" in kinds:
            out.append(Stage(f"BM25 search, top {cfg.search.hits}", [d.run_file(t.name, "bm25") for t in tests],
                             lambda: self._bm25_search(tests)))
        if cfg.fuse:
            out.append(Stage(f"fuse {' + '.join(cfg.fuse.runs)} ({cfg.fuse.method})",
                             [d.run_file(t.name, "fused") for t in tests], self._fuse))
        if cfg.teacher is not None and not cfg.distils(cfg.retriever):
            out += self._teacher_stages()
        if cfg.trains(cfg.reranker):
            out.append(Stage(f"train reranker: {_describe(cfg.reranker)}", [d.reranker / SUMMARY_FILE],
                             self._train_reranker))
        if cfg.reranker:
            out.append(Stage(f"re-rank the top {cfg.reranker.hits}", [d.run_file(t.name, RERANKED) for t in tests],
                             lambda: self._rerank(tests)))
            w = cfg.reranker.fuse_weight
            if w == AUTO:
                dev = self._dev_set()
                first = [d.run_file(DEV_SET, k) for k in kinds] + ([d.run_file(DEV_SET, "fused")] if cfg.fuse else [])
                out += [Stage(f"the re-ranker's {cfg.reranker.dev_queries} dev queries (held out of the training "
                              f"split)", [d.dev_topics, d.dev_qrels], self._dev_queries),
                        Stage("first stage of the dev queries", first, self._dev_first_stage),
                        Stage("re-rank the dev queries", [d.run_file(DEV_SET, RERANKED)],
                              lambda: self._rerank([dev])),
                        Stage(f"choose the fusion weight on the dev queries ({fuse_measure(self.cfg)})",
                              [d.fuse_weight], self._choose_fuse_weight)]
            if w is not None:
                shown = "chosen on dev" if w == AUTO else f"{w:g}"
                out.append(Stage(f"fuse the re-ranker with its first stage (weight {shown})",
                                 [d.run_file(t.name, RERANKED_FUSED) for t in tests], self._fuse_reranked))
        out.append(Stage("evaluate", [d.metrics, d.report], self._evaluate))
        return out

    def run(self, check: bool = True) -> dict[str, Any]:
        """Claim the run folder, run every incomplete stage, return the metrics (metrics.json); with `check`, a
        result that misses the config's `expect:` block raises PeftIRError (after metrics.json is written)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1:  # every rank would run, and write, every stage
            raise PeftIRError(f"`peft-ir run` runs its stages in one process, but WORLD_SIZE={world} (a torchrun or "
                              "accelerate launch); run it without a launcher, and distribute training with "
                              "`torchrun -m peft_ir.cli train retriever|reranker ...`")
        if self.cfg.trains(self.cfg.retriever) or self.cfg.trains(self.cfg.reranker):
            from peft_ir.training.args import refuse_data_parallel  # noqa: PLC0415  (imports torch)

            refuse_data_parallel()
        resumed = self.dir.claim(self.cfg)
        with self.dir.held():
            self.dir.check_inputs(self._input_files())
            return self._run_stages(resumed, check)

    def _input_files(self) -> list[Path]:
        """The data files the config names (BEIR folders, corpus, topics, qrels, given runs, training data), those
        that are local paths: what stages read and outputs are derived from. A training file the first stage builds
        (data.build_train_from) is an output; its positives are the input."""
        from peft_ir.experiment.validate import is_named_source  # noqa: PLC0415

        d = self.cfg.data
        named = [d.beir, d.corpus, d.build_train_from, None if d.build_train_from else d.train]
        named += [p for t in d.test for p in (t.topics, t.qrels, t.run)]
        paths = {Path(p).resolve() for p in named if p and not is_named_source(p) and not str(p).startswith("irds:")}
        return sorted(p for p in paths if p.exists())

    def _run_stages(self, resumed: bool, check: bool) -> dict[str, Any]:
        """Every incomplete stage in order, logged to log.txt and timed (the folder claimed and held)."""
        handler = logging.FileHandler(self.dir.log, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
        for name in LOGGERS:
            logging.getLogger(name).addHandler(handler)
        try:
            stages = self.stages()
            self.echo(f"{'resuming' if resumed else 'starting'} {self.cfg.name} in {self.dir.root} ({len(stages)} stages)")
            for k, stage in enumerate(stages, 1):
                if stage.done():
                    self.echo(f"[{k}/{len(stages)}] {stage.title}: already done")
                    continue
                self.echo(f"[{k}/{len(stages)}] {stage.title}")
                t0 = time.perf_counter()
                stage.action()
                seconds = time.perf_counter() - t0
                self.dir.record_time(stage.title, seconds)
                self.echo(f"[{k}/{len(stages)}] {stage.title}: done in {seconds:.0f} s")
            metrics = RunDir.read_json(self.dir.metrics)
            if check:
                self.check(metrics)
        finally:
            for name in LOGGERS:
                logging.getLogger(name).removeHandler(handler)
            handler.close()
            if self._bm25 is not None:
                self._bm25.close()
        return metrics

    def check(self, metrics: dict[str, Any]) -> None:
        """The config's expected results against `metrics`: a miss raises, naming measure, expected and got."""
        checks = check_expected(self.cfg, metrics)
        if checks:
            self.echo(f"expected results: all {len(checks)} reproduced (tolerance {self.cfg.expect_tolerance:g})")

    def echo(self, line: str) -> None:
        self._echo(line)
        self.dir.append_log(line)

    # -- inputs ---------------------------------------------------------------------------------------------------
    def _train_set(self) -> TestSet:
        """The training queries of a BEIR folder, searched for hard negatives."""
        return TestSet(name="train", topics=self.cfg.data.train, qrels=self.cfg.data.train,  # type: ignore[arg-type]
                       split=self.cfg.data.train_split)

    def _train_run_kinds(self, negatives_only: bool = False) -> set[str]:
        """The pipeline's own runs of the training queries: for hard negatives, and the teacher's BM25 run (and its
        dense one when the retriever is not trained, i.e. is the start model)."""
        kinds = set()
        for s in (self.cfg.retriever, self.cfg.reranker):
            if s is not None and s.negatives == "bm25":
                kinds.add("bm25")
            elif s is not None and s.negatives == "first_stage":
                kinds.add(self.cfg.first_stage)
        if not negatives_only:
            kinds |= {k for k in self.cfg.teacher_run_kinds() if k == "bm25" or self._teacher_reuses_dense()}
        return kinds

    def _train_hits(self) -> int:
        depths = [s.negatives_window[1] for s in (self.cfg.retriever, self.cfg.reranker)
                  if s is not None and s.negatives is not None]
        if self.cfg.teacher is not None:
            depths.append(self.cfg.teacher.hits)
        return max(depths or [100])

    def _negatives_run(self, s: ModelSection) -> str | None:
        if s.negatives == "bm25":
            return str(self.dir.run_file("train", "bm25"))
        if s.negatives == "first_stage":
            return str(self.dir.run_file("train", self.cfg.first_stage))
        return s.negatives

    def _first_stage_file(self, t: TestSet, kind: str) -> Path:
        return Path(t.run) if kind == "run" else self.dir.run_file(t.name, kind)  # type: ignore[arg-type]

    def _rerank_input(self, t: TestSet) -> Path:
        return self._first_stage_file(t, rerank_input_kind(bool(self.cfg.fuse), self.cfg.first_stage))

    # -- stages ---------------------------------------------------------------------------------------------------
    def _training_data_settings(self) -> dict[str, Any]:
        from peft_ir.reranker.msmarco import build_settings  # noqa: PLC0415

        return build_settings(self.cfg.data.build_train_from, k1=self.cfg.bm25.k1,  # type: ignore[arg-type]
                              b=self.cfg.bm25.b)

    def _training_data_current(self) -> bool:
        """The shared training file was built from these positives with this config's BM25 settings (else the stage
        runs, and refuses to overwrite a file another config built)."""
        from peft_ir.reranker.msmarco import training_set_is_current  # noqa: PLC0415

        return training_set_is_current(self.cfg.data.train, self._training_data_settings())  # type: ignore[arg-type]

    def _build_training_data(self) -> None:
        from peft_ir.indexing.bm25 import default_threads  # noqa: PLC0415
        from peft_ir.reranker.msmarco import build_training_set  # noqa: PLC0415

        # shared by every run that trains on this file, so it sits beside the file, not in the run folder
        train = Path(self.cfg.data.train)  # type: ignore[arg-type]
        positives = self.cfg.data.build_train_from
        assert positives is not None
        s = build_training_set(positives, train.parent / f"{train.stem}.bm25-pool", train,
                               threads=self.cfg.bm25.threads or default_threads(), k1=self.cfg.bm25.k1, b=self.cfg.bm25.b)
        self.echo(f"    {s['queries']} queries, {s['negatives']} negatives -> {s['output']}")

    def _bm25_index(self) -> None:
        from peft_ir.data import iter_documents  # noqa: PLC0415
        from peft_ir.indexing.bm25 import build_index, default_threads  # noqa: PLC0415

        build_index(iter_documents(self.cfg.data.corpus), self.dir.bm25_index,  # type: ignore[arg-type]
                    threads=self.cfg.bm25.threads or default_threads(), source=self.cfg.data.corpus)

    def _bm25_search(self, sets: list[TestSet]) -> None:
        from peft_ir.data import load_topics, write_run  # noqa: PLC0415
        from peft_ir.indexing.bm25 import BM25Searcher, default_threads  # noqa: PLC0415

        if self._bm25 is None:
            self._bm25 = BM25Searcher(self.dir.bm25_index, k1=self.cfg.bm25.k1, b=self.cfg.bm25.b)
        for t in sets:
            out = self.dir.run_file(t.name, "bm25")
            if out.exists():
                continue
            hits = self._train_hits() if t.name == "train" else self.cfg.search.hits
            run = self._bm25.search(load_topics(t.topics, t.split), hits=hits,
                                    threads=self.cfg.bm25.threads or default_threads())
            write_run(run, out, tag=f"{self.cfg.name}-bm25", hits=hits)

    def _train_config(self, cls: type, s: ModelSection, output: Path) -> Any:
        """The library's training config from a section: its settings by name, plus what the experiment supplies
        (a section that distils trains on the teacher's scored file, the others on data.train)."""
        train = str(self.dir.teacher_scored) if self.cfg.teacher and self.cfg.distils(s) else self.cfg.data.train
        return from_flat(cls, {
            **to_flat(s), "train": train, "output": str(output), "split": self.cfg.data.train_split,
            "negatives_run": self._negatives_run(s), "seed": self.cfg.seed, "head_seed": self.cfg.seed,
            "tuning": resolve_tuning(s, seed=self.cfg.seed), "resume": True,
            "progress": self.progress})

    def _train_retriever(self) -> None:
        from peft_ir.retriever.config import RetrieverTrainConfig  # noqa: PLC0415
        from peft_ir.retriever.train import train_retriever  # noqa: PLC0415

        assert self.cfg.retriever is not None
        s = train_retriever(self._train_config(RetrieverTrainConfig, self.cfg.retriever, self.dir.retriever))
        self._echo_selection(s)

    def _encoder_spec(self, trained: bool = True) -> Any:
        """The trained (or zero-shot) bi-encoder as encoding and search use it: passages cut at encode.max_length;
        with `trained` False the start model (no adapter), the teacher's."""
        from peft_ir.retriever.config import EncoderSpec  # noqa: PLC0415

        s = self.cfg.retriever
        assert s is not None
        adapter = None if s.zero_shot or not trained else str(self.dir.retriever / "adapter")
        return from_flat(EncoderSpec, {**to_flat(s), "passage_max_length": self.cfg.encode.max_length,
                                       "adapter": adapter})

    def bi_encoder(self) -> Any:
        if self._bi_encoder is None:
            from peft_ir.retriever.encoder import BiEncoder  # noqa: PLC0415

            self._bi_encoder = BiEncoder(self._encoder_spec(), dtype=torch_dtype(self.cfg.encode.dtype))
        return self._bi_encoder

    def start_encoder(self) -> Any:
        """The retriever's model untrained: the teacher's dense run, when the retriever trains."""
        if self._start_encoder is None:
            from peft_ir.retriever.encoder import BiEncoder  # noqa: PLC0415

            self._start_encoder = BiEncoder(self._encoder_spec(trained=False),
                                            dtype=torch_dtype(self.cfg.encode.dtype))
        return self._start_encoder

    def _encode(self, encoder: Any = None, output: Path | None = None) -> None:
        from peft_ir.data import iter_documents  # noqa: PLC0415
        from peft_ir.retriever.encode import encode_corpus  # noqa: PLC0415

        e = self.cfg.encode
        encoder = self.bi_encoder() if encoder is None else encoder
        corpus = iter_documents(self.cfg.data.corpus)  # type: ignore[arg-type]
        encode_corpus(encoder, corpus, output or self.dir.embeddings, chunk_size=e.chunk_size, batch_size=e.batch_size,
                      progress=self.progress)

    def _index(self, embeddings: Path | None = None, output: Path | None = None) -> None:
        from peft_ir.indexing.dense import build_index  # noqa: PLC0415

        build_index(embeddings or self.dir.embeddings, output or self.dir.index, self.cfg.index.factory,
                    train_sample=self.cfg.index.train_sample, nprobe=self.cfg.index.nprobe, progress=self.progress)

    def _dense_search(self, sets: list[TestSet]) -> None:
        self._search(self.bi_encoder(), self.dir.index, [(t, self.dir.run_file(t.name, "dense")) for t in sets])

    def _search(self, encoder: Any, index_dir: Path, jobs: list[tuple[TestSet, Path]]) -> None:
        """Search each job's queries in the index into its run file (a finished one is kept)."""
        from peft_ir.data import load_topics, write_run  # noqa: PLC0415
        from peft_ir.indexing.dense import DenseIndex  # noqa: PLC0415
        from peft_ir.indexing.search import dense_search  # noqa: PLC0415

        index = DenseIndex(index_dir, device=self.cfg.search.device, nprobe=self.cfg.index.nprobe,
                           fp16=self.cfg.search.fp16_index)
        index.check_encoder(encoder.manifest())
        for t, out in jobs:
            if out.exists():
                continue
            hits = self._train_hits() if t.name == "train" else self.cfg.search.hits
            run = dense_search(encoder, [index], load_topics(t.topics, t.split), hits,
                               batch_size=self.cfg.search.batch_size, progress=self.progress)
            write_run(run, out, tag=f"{self.cfg.name}-dense", hits=hits)

    # -- the teacher: a scored file of the training queries, made before the training that distils it ------------
    def _teacher_reuses_dense(self) -> bool:
        """The start model's dense run is the pipeline's own when the retriever is not trained and makes a dense
        run anyway: encoded once. (A zero-shot retriever that serves the teacher only, under a BM25 first stage, has
        the teacher's stages encode with it.)"""
        return ("dense" in self.cfg.teacher_run_kinds() and not self.cfg.trains(self.cfg.retriever)
                and "dense" in self.cfg.run_kinds())

    def _teacher_run(self, kind: str) -> Path:
        """The teacher's run of the training queries of one kind: BM25's (and a zero-shot retriever's dense one)
        is the pipeline's own, the start model's dense run and the fusion are in teacher/."""
        if kind == "bm25" or (kind == "dense" and self._teacher_reuses_dense()):
            return self.dir.run_file("train", kind)
        return self.dir.teacher / f"train.{kind}.trec"

    def _teacher_stages(self) -> list[Stage]:
        from peft_ir.teacher.annotate import record_path  # noqa: PLC0415

        t, d = self.cfg.teacher, self.dir
        assert t is not None
        out: list[Stage] = []
        if "dense" in self.cfg.teacher_run_kinds() and not self._teacher_reuses_dense():
            emb, index = d.teacher / "embeddings", d.teacher / "index"
            out += [Stage(f"teacher: encode the corpus with the untrained start model (max length "
                          f"{self.cfg.encode.max_length})", [emb / "manifest.json"],
                          lambda: self._encode(self.start_encoder(), emb)),
                    Stage(f"teacher: index (FAISS {self.cfg.index.factory})", [index / "manifest.json"],
                          lambda: self._index(emb, index)),
                    Stage(f"teacher: dense search of the training queries, top {self._train_hits()}",
                          [self._teacher_run("dense")], self._teacher_dense_search)]
        fusion = self.cfg.teacher_fusion()
        if t.candidates == "fused":
            assert fusion is not None
            out.append(Stage(f"teacher: fuse {' + '.join(fusion)} of the training queries (interpolate)",
                             [self._teacher_run("fused")], self._teacher_fuse))
        what = ("the positives and negatives of the training file" if t.candidates == "file" else
                f"the top {t.depth} of the {t.candidates} run of the training queries")
        out.append(Stage(f"teacher: score {what} ({t.teacher})", [d.teacher_scored, record_path(d.teacher_scored)],
                         self._annotate))
        return out

    def _teacher_dense_search(self) -> None:
        self._search(self.start_encoder(), self.dir.teacher / "index",
                     [(self._train_set(), self._teacher_run("dense"))])
        self._start_encoder = None  # not needed again: free its memory before training

    def _teacher_fuse(self) -> None:
        """The fusion teacher's own ranking (its runs, weights and min-max interpolation): its top `depth` are the
        candidates it scores."""
        from peft_ir.data import read_run, write_run  # noqa: PLC0415
        from peft_ir.indexing.fusion import interpolate  # noqa: PLC0415

        t, fusion = self.cfg.teacher, self.cfg.teacher_fusion()
        assert t is not None and fusion is not None
        hits = self._train_hits()
        fused = interpolate([read_run(self._teacher_run(k)) for k in fusion], weights=t.teacher_weights,
                            norm="minmax", hits=hits)
        write_run(fused, self._teacher_run("fused"), tag=f"{self.cfg.name}-teacher-fused", hits=hits)

    def _annotate(self) -> None:
        """`peft-ir annotate` of the training split: resumable inside (whole blocks of queries kept after a kill);
        the scored file appears under its name only when complete, with its record."""
        from peft_ir.devices import device_for_process  # noqa: PLC0415
        from peft_ir.teacher.annotate import annotate  # noqa: PLC0415
        from peft_ir.teacher.config import AnnotateConfig  # noqa: PLC0415

        t, fusion = self.cfg.teacher, self.cfg.teacher_fusion()
        assert t is not None
        teacher = FUSION_PREFIX + ",".join(str(self._teacher_run(k)) for k in fusion) if fusion else t.teacher
        inputs = ({"train": self.cfg.data.train} if t.candidates == "file" else
                  {"dataset": self.cfg.data.train, "split": self.cfg.data.train_split,
                   "run": str(self._teacher_run(t.candidates))})
        cfg = from_flat(AnnotateConfig, {**to_flat(t), **inputs, "teacher": teacher,
                                         "output": str(self.dir.teacher_scored), "progress": self.progress})
        s = annotate(cfg, "cpu" if fusion else device_for_process())
        resumed = f", resumed after {s.resumed_from}" if s.resumed_from else ""
        self.echo(f"    {s.passages} passages of {s.queries} queries scored by the {s.record['teacher']['kind']} "
                  f"teacher{resumed} -> {cfg.output}")

    def _fuse(self, sets: list[TestSet] | None = None) -> None:
        from peft_ir.data import read_run, write_run  # noqa: PLC0415
        from peft_ir.indexing.fusion import fuse  # noqa: PLC0415

        f = self.cfg.fuse
        assert f is not None
        for t in self.cfg.data.test if sets is None else sets:
            runs = [read_run(self._first_stage_file(t, kind)) for kind in f.runs]
            fused = fuse(runs, f.method, k=f.k, norm=f.norm, weights=f.weights, hits=f.hits)
            write_run(fused, self.dir.run_file(t.name, "fused"), tag=f"{self.cfg.name}-fused", hits=f.hits)

    def _cross_encoder_spec(self) -> Any:
        from peft_ir.reranker.config import CrossEncoderSpec  # noqa: PLC0415

        assert self.cfg.reranker is not None
        return from_flat(CrossEncoderSpec, {**to_flat(self.cfg.reranker), "head_seed": self.cfg.seed})

    def _train_reranker(self) -> None:
        from peft_ir.reranker.config import RerankerTrainConfig  # noqa: PLC0415
        from peft_ir.reranker.training import train_reranker  # noqa: PLC0415

        assert self.cfg.reranker is not None
        s = train_reranker(self._train_config(RerankerTrainConfig, self.cfg.reranker, self.dir.reranker))
        self._echo_selection(s)

    def _echo_selection(self, summary: dict[str, Any]) -> None:
        """Which weights the training kept (the starting model when no checkpoint beat it on dev), and why."""
        from peft_ir.training.selection import describe  # noqa: PLC0415

        if summary:  # {} on the other ranks under torchrun
            self.echo(f"    {describe(summary)}")

    def _rerank(self, sets: list[TestSet]) -> None:
        from peft_ir.reranker.model import CrossEncoder  # noqa: PLC0415
        from peft_ir.reranker.rerank import rerank_files  # noqa: PLC0415

        s = self.cfg.reranker
        assert s is not None
        if self._cross_encoder is None:
            adapter = None if s.zero_shot else self.dir.reranker / "adapter"
            self._cross_encoder = CrossEncoder(self._cross_encoder_spec(), adapter=adapter,
                                               dtype=torch_dtype(s.rerank_dtype))
        for t in sets:
            out = self.dir.run_file(t.name, RERANKED)
            if out.exists():
                continue
            corpus = self.cfg.data.corpus
            assert corpus is not None
            stats = rerank_files(self._rerank_input(t), t.topics, corpus, self._cross_encoder, out, hits=s.hits,
                                 batch_size=s.rerank_batch_size, split=t.split, tag=f"{self.cfg.name}-reranked",
                                 keep_rest=s.keep_rest)
            self.echo(f"    {t.name}: {stats.pairs} pairs of {stats.queries} queries "
                      f"({stats.pairs - stats.scored} from the score cache)")

    # -- the fusion weight chosen on the re-ranker's dev queries (fuse_weight: auto) --------------------------------
    def _dev_set(self) -> TestSet:
        return TestSet(name=DEV_SET, topics=str(self.dir.dev_topics), qrels=str(self.dir.dev_qrels))

    def _dev_queries(self) -> None:
        """The queries the re-ranker's training holds out, by the training's own split (reranker/training.py), with
        their qrels from the training split: the same seed (summary.json's dev_seed), data and count."""
        from peft_ir.data import load_qrels, write_beir_qrels, write_queries  # noqa: PLC0415
        from peft_ir.reranker.config import RerankerTrainConfig  # noqa: PLC0415
        from peft_ir.reranker.training import held_out_dev  # noqa: PLC0415

        s = self.cfg.reranker
        assert s is not None
        train_cfg = self._train_config(RerankerTrainConfig, s, self.dir.reranker)
        summary = RunDir.read_json(self.dir.reranker / SUMMARY_FILE)
        if summary and summary.get("dev_seed") not in (None, train_cfg.dev_split_seed()):
            raise PeftIRError(f"{self.dir.reranker / 'summary.json'}: the re-ranker held out its dev queries with "
                              f"seed {summary['dev_seed']}, this config says {train_cfg.dev_split_seed()}")
        dev = held_out_dev(train_cfg)
        if summary and summary.get("dev_queries") not in (None, len(dev.queries)):
            raise PeftIRError(f"{self.dir.reranker / 'summary.json'}: the re-ranker held out {summary['dev_queries']} "
                              f"dev queries, the split rebuilt here has {len(dev.queries)}")
        judged = load_qrels(self.cfg.data.train, self.cfg.data.train_split)  # type: ignore[arg-type]
        write_queries(dev.queries, self.dir.dev_topics)
        write_beir_qrels({qid: judged[qid] for qid in dev.queries}, self.dir.dev_qrels)
        self.echo(f"    {len(dev.queries)} dev queries (seed {train_cfg.dev_split_seed()}) -> {self.dir.dev_topics}")

    def _dev_first_stage(self) -> None:
        """The test queries' first stage, run for the dev queries: same index, BM25 settings, depth and fusion."""
        dev, kinds = [self._dev_set()], self.cfg.run_kinds()
        if "dense" in kinds:
            self._dense_search(dev)
        if "bm25" in kinds:
            self._bm25_search(dev)
        if self.cfg.fuse:
            self._fuse(dev)

    def _choose_fuse_weight(self) -> None:
        import json  # noqa: PLC0415

        from peft_ir.atomic import atomic_open  # noqa: PLC0415
        from peft_ir.data import load_qrels, read_run  # noqa: PLC0415
        from peft_ir.eval.fuse_weight import choose_fuse_weight  # noqa: PLC0415

        s = self.cfg.reranker
        assert s is not None
        dev = self._dev_set()
        choice = choose_fuse_weight(read_run(self._rerank_input(dev)), read_run(self.dir.run_file(DEV_SET, RERANKED)),
                                    load_qrels(dev.qrels), fuse_measure(self.cfg), hits=s.hits, keep_rest=s.keep_rest,
                                    ignore_self=self.cfg.eval.ignore_self)  # judged as the test sets are
        with atomic_open(self.dir.fuse_weight) as fh:
            json.dump(choice.to_json(), fh, indent=1)
        for line in choice.table():
            self.echo(f"    {line}")
        self.echo(f"    {choice.verdict()}")

    def fuse_weight(self) -> float:
        """The re-ranker's fusion weight: the config's, or the one chosen on dev (fuse-weight.json)."""
        from peft_ir.eval.fuse_weight import WeightChoice  # noqa: PLC0415

        s = self.cfg.reranker
        assert s is not None and s.fuse_weight is not None
        if s.fuse_weight != AUTO:
            return float(s.fuse_weight)
        return WeightChoice.from_json(RunDir.read_json(self.dir.fuse_weight)).weight

    def _fuse_reranked(self) -> None:
        from peft_ir.indexing.fusion import write_fused_reranked  # noqa: PLC0415

        s = self.cfg.reranker
        assert s is not None
        weight = self.fuse_weight()
        for t in self.cfg.data.test:
            write_fused_reranked(self._rerank_input(t), self.dir.run_file(t.name, RERANKED), weight, s.hits,
                                 self.dir.run_file(t.name, RERANKED_FUSED), keep_rest=s.keep_rest,
                                 tag=f"{self.cfg.name}-{RERANKED_FUSED}")
        if weight == 0.0:
            self.echo("    weight 0: the final run is a copy of the first stage's")

    def _evaluate(self) -> None:
        produced = {}
        for t in self.cfg.data.test:
            files = {kind: self._first_stage_file(t, kind) for kind in self.cfg.run_kinds()}
            if self.cfg.fuse:
                files["fused"] = self.dir.run_file(t.name, "fused")
            if self.cfg.reranker:
                files[RERANKED] = self.dir.run_file(t.name, RERANKED)
                if self.cfg.reranker.fuse_weight is not None:
                    files[RERANKED_FUSED] = self.dir.run_file(t.name, RERANKED_FUSED)
            produced[t.name] = files
        metrics = evaluate_runs(self.cfg, produced, self.dir)
        write_run_report(self.cfg, metrics, self.dir)


def _describe(section: ModelSection | None) -> str:
    assert section is not None
    sizes = f"budget {section.budget}" if section.budget else ", ".join(f"{k}={v}" for k, v in section.tuning.items())
    length = f"{section.max_steps} steps" if section.max_steps > 0 else f"{section.epochs:g} epoch(s)"
    return section.method + (f" ({sizes})" if sizes else "") + f", {length}"  # type: ignore[operator]
