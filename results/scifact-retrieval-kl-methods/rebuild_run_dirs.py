"""Lay committed result folders out as run folders that `peft-ir report` reads (the machine's run folders did not
survive between sessions): config.resolved.yaml, metrics.json, retriever/summary.json (from retriever-summary.json)
and retriever/metrics.jsonl (log.txt's metric lines).

    python rebuild_run_dirs.py OUT RESULT_DIR...    then    peft-ir report --output DIR OUT/<name>...
"""
import json, shutil, sys
from pathlib import Path
out = Path(sys.argv[1]); out.mkdir(exist_ok=True)
for src in map(Path, sys.argv[2:]):
    name = json.loads((src / "metrics.json").read_text())["name"]
    d = out / name
    (d / "retriever").mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "config.resolved.yaml", d); shutil.copy(src / "metrics.json", d)
    shutil.copy(src / "retriever-summary.json", d / "retriever" / "summary.json")
    log = src / "log.txt"
    if log.is_file():
        rows = [l.split("INFO peft_ir.metrics: ", 1)[1] for l in log.read_text().splitlines() if "INFO peft_ir.metrics: " in l]
        (d / "retriever" / "metrics.jsonl").write_text("".join(r + "\n" for r in rows))
    print(d, "curve" if log.is_file() else "no log: no curve")

# Two seed-42 folders were committed without log.txt: their dev curves as results/distill-pilot.md quotes them
# (sections 5 and 8; start and best values exact from the summary), no loss curve.
QUOTED = {"iaa-l-0.5-kl": {50: None, 100: 0.5956, 150: 0.6125}, "full-kl": {50: 0.6266, 100: 0.6291, 150: None}}
for name, points in QUOTED.items():
    d = out / name
    if not d.is_dir() or (d / "retriever" / "metrics.jsonl").is_file():
        continue
    s = json.loads((d / "retriever" / "summary.json").read_text())
    best = int(s["best_checkpoint"].rsplit("-", 1)[1])
    rows = [{"step": 0, "eval_dev_nDCG@10": s["start_dev"]}]
    rows += [{"step": k, "eval_dev_nDCG@10": s["best_dev"] if k == best else v} for k, v in points.items()]
    assert all(r["eval_dev_nDCG@10"] is not None for r in rows), name
    (d / "retriever" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(d, "dev curve as quoted in distill-pilot.md")
