"""What each cheap selection keeps on noisy-mix-v2, before any fine-tune: the share of each
corruption kind and each source in the 10% subset, per seed (labels used only to score).

    python bench/results/noisy-mix-v2/selection_shares.py SUITE CACHE OUT.json [--seeds 5]

CACHE is the bench's shared method cache (the base-model and response-alone losses of the pool
are read from it, so the loss filters cost nothing here when the bench has run). Rows: random,
auto (= recommended-v1 = filtered-random at filter_keep 0.75), lowest-loss, ifd (low first),
dsir (against the instruction dev targets).
Settings as in bench/run_noisy_mix_v2.sh (SmolLM2-135M, max_length 256)."""

import argparse
import json
import platform
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

import shedkit
from shedkit.data.pool import load_pool
from shedkit.evaluate.suite import Suite, read_labels

ap = argparse.ArgumentParser()
ap.add_argument("suite")
ap.add_argument("cache")
ap.add_argument("out")
ap.add_argument("--seeds", type=int, default=5)
a = ap.parse_args()

suite = Suite.discover(a.suite)
labels = read_labels(suite.labels)
pool = load_pool(suite.pool, skip_empty=True)
loss_dev = [str(p) for p in suite.loss_dev().values()]
common = dict(budget=0.1, cache_dir=a.cache, progress=False)
scoring = dict(model="smollm2-135m", max_length=256)
rows = {
    "random": dict(method="random"),
    "auto": dict(method="auto", **scoring),
    "lowest-loss": dict(method="lowest-loss", **scoring),
    "ifd": dict(method="ifd", **scoring),
    "dsir": dict(method="dsir", target=loss_dev),
}
kinds = sorted({r["label"] for r in labels})
sources = sorted({r["source"] for r in labels})
doc = {"suite": str(suite.root), "seeds": a.seeds, "budget": 0.1, "rows": {},
       "git": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
       "command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": platform.platform()}
for name, spec in rows.items():
    per_seed = []
    for seed in range(a.seeds):
        t0 = time.perf_counter()
        res = shedkit.select(pool, seed=seed, **common, **spec)
        picked = [labels[i] for i in res.rows]
        n = len(picked)
        lab, src = Counter(p["label"] for p in picked), Counter(p["source"] for p in picked)
        per_seed.append({"seed": seed, "seconds": round(time.perf_counter() - t0, 2),
                         "corrupted": 1 - lab["clean"] / n, **{k: lab[k] / n for k in kinds},
                         **{f"source_{s}": src[s] / n for s in sources}})
        print(name, seed, f"corrupted {per_seed[-1]['corrupted']:.3f}", flush=True)
    keys = [k for k in per_seed[0] if k not in ("seed",)]
    doc["rows"][name] = {"per_seed": per_seed,
                         "mean": {k: float(np.mean([s[k] for s in per_seed])) for k in keys},
                         "sd": {k: float(np.std([s[k] for s in per_seed], ddof=1)) if a.seeds > 1 else None for k in keys}}
pool_lab = Counter(r["label"] for r in labels)
doc["pool"] = {k: pool_lab[k] / len(labels) for k in kinds}
Path(a.out).write_text(json.dumps(doc, indent=1))
cols = ["corrupted", *[k for k in kinds if k != "clean"], *[f"source_{s}" for s in sources]]
print("| row | " + " | ".join(cols) + " |")
print("|---|" + "---|" * len(cols))
print("| pool | " + f"{1 - doc['pool']['clean']:.1%} | " + " | ".join(f"{doc['pool'][k]:.1%}" for k in kinds if k != "clean")
      + " | " + " | ".join("" for _ in sources) + " |")
for name, r in doc["rows"].items():
    print(f"| {name} | " + " | ".join(f"{r['mean'][c]:.1%} ± {r['sd'][c]:.1%}" for c in cols) + " |")
