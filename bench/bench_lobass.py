"""LoBaSS on noisy-mix-v1: how many corrupted rows a 10% selection holds, and what each stage costs.

Runs ``shedkit.select(method="lobass")`` on ``../shared/bench/noisy-mix-v1/pool.jsonl``
(rows with an empty response skipped), then reads the subset's labels from
``pool_labels.jsonl`` and reports, against random selection (mean over ``--random-seeds``):

* the fraction of corrupted rows in the selection, overall and per corruption kind
  (misaligned, truncated, boilerplate, wrong_answer), and the share of GSM8K rows;
* the wall time of each LoBaSS stage from the run's manifest: reference fine-tune (train +
  save + load), base losses, reference losses (and the pipeline's total);
* variants computed from the same cached losses at no model cost: guards
  (``--easy-quantile``/``--hard-quantile``), quotas by source at the pool's shares, and the
  plain lowest-base-loss filter for comparison.

A 1-epoch LoRA over all 3,000 rows does not fit a short run on a 2-core CPU; ``--epochs``
below 1 trains the reference on that random fraction of the pool (one pass over it), which is
how the numbers in the report were made; ``--subsample N`` scores a seeded random N-row part
of the pool (labels follow the rows) when even one loss pass over 3,000 rows is too long. The run directory and cache are kept, so a rerun
reuses the reference and every loss (stage times then show the cached cost).

    HF_HUB_OFFLINE=1 PYTHONPATH=src .venv/bin/python bench/bench_lobass.py \\
        [--max-length 256] [--epochs 0.25] [--lr 1e-3] [--budget 0.1] [--random-seeds 5] \\
        [--subsample N] [--threads 1] [--cache-dir DIR] [--out DIR] [--json results.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "bench" / "noisy-mix-v1"
KINDS = ("misaligned", "truncated", "boilerplate", "wrong_answer")


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


def composition(rows, labels) -> dict:
    """Corrupted share overall and per kind, and GSM8K share, of the pool lines ``rows``."""
    picked = [labels[i] for i in rows]
    kinds = Counter(p["label"] for p in picked)
    n = len(picked)
    out = {"rows": n, "corrupted": sum(v for k, v in kinds.items() if k != "clean") / n}
    out.update({k: kinds.get(k, 0) / n for k in KINDS})
    out["gsm8k"] = sum(p["source"] == "gsm8k" for p in picked) / n
    return out


def mean_of(dicts) -> dict:
    return {k: float(np.mean([d[k] for d in dicts])) for k in dicts[0]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", type=Path, default=DATA / "pool.jsonl")
    ap.add_argument("--labels", type=Path, default=DATA / "pool_labels.jsonl")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--budget", default="0.1")
    ap.add_argument("--max-length", type=int, default=256, help="tokens per row, for training and scoring")
    ap.add_argument("--epochs", type=float, default=1.0, help="reference fine-tune epochs (<1: that random fraction of the pool)")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--batch-size", type=int, default=None, help="reference fine-tune batch size")
    ap.add_argument("--precision", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--random-seeds", type=int, default=5)
    ap.add_argument("--easy-quantile", type=float, default=0.1)
    ap.add_argument("--hard-quantile", type=float, default=0.1)
    ap.add_argument("--subsample", type=int, default=0,
                    help="score a seeded random subset of this many pool rows instead of the whole pool (0: all)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (1 is faster on a busy 2-core machine)")
    ap.add_argument("--cache-dir", type=Path, default=Path(os.environ.get("SHEDKIT_CACHE", Path.home() / ".cache" / "shedkit")))
    ap.add_argument("--out", type=Path, default=Path("bench-out") / "lobass")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import shedkit
    from shedkit.data.pool import load_pool
    from shedkit.selectors.learnability import select_learnable

    labels = [json.loads(line) for line in args.labels.read_text().splitlines() if line.strip()]
    assert all(lab["line"] == i for i, lab in enumerate(labels)), "pool_labels.jsonl is not in line order"
    pool = load_pool(args.pool, skip_empty=True)
    if args.subsample and args.subsample < len(pool.records):
        keep = np.sort(np.random.default_rng(args.seed).choice(len(pool.records), args.subsample, replace=False))
        pool = dataclasses.replace(pool, records=[pool.records[i] for i in keep])
    start_load = loadavg()
    print(f"pool: {len(pool.records)} rows ({len(pool.skipped_empty)} empty skipped); load average {start_load}; "
          f"torch threads {torch.get_num_threads()}", flush=True)

    opts = {k: v for k, v in dict(lr=args.lr, batch_size=args.batch_size, precision=args.precision).items() if v is not None}
    t0 = time.perf_counter()
    run = shedkit.select(pool, method="lobass", budget=args.budget, seed=args.seed, model=args.model,
                         max_length=args.max_length, epochs=args.epochs, out=args.out / "plain",
                         cache_dir=args.cache_dir, command=["bench_lobass.py", *(argv or sys.argv[1:])], **opts)
    total = time.perf_counter() - t0
    info = run.manifest["method"]
    n = run.budget
    rows_of = lambda positions: [pool.records[i].index for i in positions]  # noqa: E731
    results = {"lobass": composition(run.rows, labels)}

    # variants on the same losses (no model work): guards, quotas by source, lowest base loss
    base = np.array([float(v) for v in run.columns["loss_base"]])
    ref = np.array([float(v) for v in run.columns["loss_ref"]])
    sources = [labels[r.index]["source"] for r in pool.records]
    guarded = select_learnable(base, ref, n, easy_quantile=args.easy_quantile, hard_quantile=args.hard_quantile)
    results[f"lobass+guards({args.easy_quantile},{args.hard_quantile})"] = composition(rows_of(guarded.selected), labels)
    quota = select_learnable(base, ref, n, groups=sources)
    results["lobass+quota(source, pool shares)"] = composition(rows_of(quota.selected), labels)
    lowest = np.lexsort((np.arange(len(base)), base))[:n]
    results["lowest base loss"] = composition(rows_of(lowest), labels)
    randoms = [composition(shedkit.select(pool, method="random", budget=args.budget, seed=s).rows, labels)
               for s in range(args.random_seeds)]
    results[f"random (mean of {args.random_seeds} seeds)"] = mean_of(randoms)
    results["pool"] = composition([r.index for r in pool.records], labels)

    timings = {k: round(v, 1) for k, v in run.manifest["method_timings"].items()}
    report = {
        "settings": {"model": args.model, "pool_rows": len(pool.records), "subsample": args.subsample,
                     "budget": n, "max_length": args.max_length, "epochs": args.epochs,
                     "train_config": info["reference"].get("train_config"), "seed": args.seed},
        "reference": {k: info["reference"].get(k) for k in ("source", "path", "train_stats")},
        "losses": info["losses"],
        "skipped_rows": info["skipped_rows"],
        "timings_s": {**timings, "select_total": round(total, 1)},
        "load_average": {"start": start_load, "end": loadavg()},
        "torch_threads": torch.get_num_threads(),
        "results": results,
    }
    print(json.dumps({k: report[k] for k in ("settings", "reference", "losses", "timings_s", "load_average")}, indent=1))
    header = f"{'selection':40s} {'corrupt':>8s} " + " ".join(f"{k[:11]:>11s}" for k in KINDS) + f" {'gsm8k':>7s}"
    print(header)
    for name, r in results.items():
        print(f"{name:40s} {r['corrupted']:8.1%} " + " ".join(f"{r[k]:11.1%}" for k in KINDS) + f" {r['gsm8k']:7.1%}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
