"""The teacher's softmax mass on the positive in a group of the first positive and 7 of its scored candidates drawn
at random (seed 0), at temperatures 1, 2 and 4 (results/rerank-head.md, section 13).

python results/scifact-rerank-cosine-960-kl-full-t2/teacher_softmax_mass.py \
    runs/scifact/rerank/iaa-l-0.5-cosine-960-kl-full/teacher/train.scored.jsonl
"""
import math
import random
import statistics
import sys

from peft_ir.data.training import read_training

rng = random.Random(0)
mass: dict[float, list[float]] = {t: [] for t in (1.0, 2.0, 4.0)}
for ex in read_training(sys.argv[1], "scored"):  # refuses a malformed line with file, line and field
    pos, neg = ex.positive_scores or [], ex.negative_scores or []
    if len(neg) < 7:  # every scored example has a positive (read_training refuses one without)
        continue
    group = [pos[0], *rng.sample(neg, 7)]
    for t, values in mass.items():
        e = [math.exp(s / t) for s in group]
        values.append(e[0] / sum(e))
for t, values in mass.items():
    print(f"temperature {t:g}: {len(values)} groups, median {statistics.median(values):.3f}")
