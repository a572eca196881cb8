"""Measure the bench recipe's cost on this machine: LoRA steps (SmolLM2-135M, batch 8, given
max_length, precision auto) and the evaluation of each test target on a head of its rows.

    python bench/results/noisy-mix-v1/measure_recipe.py SUITE [--max-length 256] [--steps 4] [--eval-rows 60]
Prints one JSON document (seconds per step, seconds per eval row per task, load average)."""

import argparse
import json
import os
import platform
import time
from dataclasses import replace

import torch

from shedkit.data.pool import load_pool
from shedkit.evaluate.harness import score_task
from shedkit.evaluate.recipe import BENCH_RECIPE
from shedkit.evaluate.suite import Suite
from shedkit.evaluate.tasks import load_task
from shedkit.models.config import ScoreConfig
from shedkit.models.finetune import finetune
from shedkit.models.loading import shared_model

ap = argparse.ArgumentParser()
ap.add_argument("suite")
ap.add_argument("--max-length", type=int, default=256)
ap.add_argument("--steps", type=int, default=4)
ap.add_argument("--eval-rows", type=int, default=60)
a = ap.parse_args()
suite = Suite.discover(a.suite)
out = {"load_start": os.getloadavg(), "threads": torch.get_num_threads(), "machine": platform.processor()}
t = time.perf_counter()
model, tok = shared_model("smollm2-135m")
out["load_model_s"] = round(time.perf_counter() - t, 2)
pool = load_pool(suite.pool, skip_empty=True)
recipe = replace(BENCH_RECIPE, epochs=1.0, max_length=a.max_length)
rows = pool.records[: 8 * a.steps]
res = finetune(model, tok, rows, recipe, 0, progress=False)
s = res.stats
out["train"] = {"steps": s.steps, "seconds": round(s.seconds, 2), "s_per_step": round(s.seconds / s.steps, 2),
                "tokens": s.tokens, "precision": s.precision, "max_length": a.max_length}
ft = res.model
out["eval"] = {}
for name, path in suite.test.items():
    task = load_task(path, name=name).head(a.eval_rows)
    m = score_task(ft, tok, task, ScoreConfig(), progress=False)
    n_full = len(load_task(path, name=name))
    out["eval"][name] = {"rows": len(task), "seconds": m["seconds"], "s_per_row": round(m["seconds"] / len(task), 3),
                         "full_rows": n_full, "full_estimate_s": round(m["seconds"] / len(task) * n_full, 1)}
out["load_end"] = os.getloadavg()
print(json.dumps(out, indent=1))
