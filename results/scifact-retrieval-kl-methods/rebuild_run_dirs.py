"""Lay committed result folders out as run folders that `peft-ir report` reads (the machine's run folders did not
survive between sessions): config.resolved.yaml, metrics.json, PART/summary.json (from PART-summary.json) and
PART/metrics.jsonl (log.txt's metric lines), PART being retriever or reranker, whichever summary the folder holds;
a folder without either summary (a zero-shot run, nothing trained) gets the first two only.

    python rebuild_run_dirs.py OUT RESULT_DIR...    then    peft-ir report --output DIR OUT/<name>...
"""

import json
import shutil
import sys
from pathlib import Path

METRIC_LINE = "INFO peft_ir.metrics: "  # how log.txt carries each line of the training's metrics.jsonl
# Two seed-42 folders were committed without log.txt: their dev curves as results/distill-pilot.md quotes them
# (sections 5 and 8; None: the best step, whose exact value is the summary's best_dev), no loss curve.
QUOTED = {"iaa-l-0.5-kl": {50: None, 100: 0.5956, 150: 0.6125}, "full-kl": {50: 0.6266, 100: 0.6291, 150: None}}


def curve(src: Path, name: str, summary: dict) -> tuple[list[dict], str]:
    """The run's metric rows and where they came from."""
    log = src / "log.txt"
    if log.is_file():
        lines = log.read_text(encoding="utf-8").splitlines()
        return [json.loads(line.split(METRIC_LINE, 1)[1]) for line in lines if METRIC_LINE in line], "log.txt"
    if name not in QUOTED:
        return [], "no log: no curve"
    rows = [{"step": 0, "eval_dev_nDCG@10": summary["start_dev"]}]
    rows += [{"step": step, "eval_dev_nDCG@10": summary["best_dev"] if value is None else value}
             for step, value in QUOTED[name].items()]
    return rows, "dev curve as quoted in distill-pilot.md"


def main(out: Path, sources: list[Path]) -> None:
    out.mkdir(exist_ok=True)
    for src in sources:
        name = json.loads((src / "metrics.json").read_text(encoding="utf-8"))["name"]
        run = out / name
        part = "reranker" if (src / "reranker-summary.json").is_file() else "retriever"
        run.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / "config.resolved.yaml", run)
        shutil.copy(src / "metrics.json", run)
        if not (src / f"{part}-summary.json").is_file():
            print(run, "untrained: no summary, no curve")
            continue
        (run / part).mkdir(exist_ok=True)
        shutil.copy(src / f"{part}-summary.json", run / part / "summary.json")
        summary = json.loads((src / f"{part}-summary.json").read_text(encoding="utf-8"))
        rows, origin = curve(src, name, summary)
        if rows:
            (run / part / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        print(run, origin)


if __name__ == "__main__":
    main(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])
