"""Experiments from YAML configs: one file = one reproducible experiment, run stage by stage into a run folder.

    load_config(path, overrides)  -> ExperimentConfig     (extends, --set, validation before any work)
    Pipeline(cfg).run()           -> metrics              (resumable stages; see pipeline.py)
    build_report(run_dirs, out)   -> markdown             (tables, significance, curves; see report.py)

Modules: config (schema), schema (typed building), loading (YAML, extends, --set), validate (rules, inputs),
tuning (budgets on the model structure), rundir (layout, config guard), pipeline, evaluation, results (run folders
read back for reports), report, plots.
"""

from peft_ir.experiment.config import ExperimentConfig
from peft_ir.experiment.loading import load_config, to_yaml
from peft_ir.experiment.schema import ConfigError

__all__ = ["ConfigError", "ExperimentConfig", "load_config", "to_yaml"]
