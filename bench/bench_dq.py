"""DQ: wall time and peak memory of GraphCut binning + per-bin sampling against pool size and mode.

Embeddings (dim 384, L2-normalised), made in the child before the clock starts:

* ``random``: isotropic standard-normal vectors (seeded). Similarities are all near 0, so gains
  reshuffle after every pick: the worst case for blocked mode's column cache;
* ``hashed``: shedkit's hashed n-gram embedder (dim 384) on the noisy-mix-v1 pool's 3,000 rows,
  resampled with replacement to N rows plus a small Gaussian jitter (sigma 0.01 per dimension,
  so copies of a row are near-duplicates with similarity ~0.96, not exact ties). MiniLM on
  100k rows would take ~20 min on 2 cores (~90 rows/s), so it is not used here.

Each (embeddings, rows, mode) runs once in its own subprocess, which reports wall time, peak
resident memory (VmHWM, see peak_rss_mb) and RSS after the embeddings were made; DQ selects 10%
with 10 bins.

    PYTHONPATH=src .venv/bin/python bench/bench_dq.py [--sizes 3000,30000,100000] [--kinds random,hashed]
        [--modes auto]   # or e.g. exact,blocked,partitioned
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from shedkit.util.memory import peak_rss_mb

POOL = Path(__file__).resolve().parents[1].parent / "shared" / "bench" / "noisy-mix-v1" / "pool.jsonl"


def make_embeddings(kind: str, n: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.standard_normal((n, 384), dtype=np.float32)
    from shedkit.embed.hashed import HashedNgramEmbedder

    rows = [json.loads(line) for line in POOL.read_text(encoding="utf-8").splitlines()]
    texts = ["\n".join(str(v) for v in row.values() if v != "") for row in rows]
    base = np.asarray(HashedNgramEmbedder(dim=384).encode(texts), dtype=np.float32)
    if n == len(base):
        return base
    picks = rng.integers(len(base), size=n)
    return base[picks] + rng.normal(scale=0.01, size=(n, 384)).astype(np.float32)


def child(kind: str, n: int, mode: str, seed: int) -> dict:
    from shedkit.selectors.dq import dq_select

    emb = make_embeddings(kind, n, seed)
    import sklearn.cluster  # noqa: F401  (imported before the clock, as the embeddings are)

    rss0 = peak_rss_mb()
    t0 = time.perf_counter()
    res = dq_select(emb, n // 10, bins=10, seed=seed, mode=mode)
    wall = time.perf_counter() - t0
    rss1 = peak_rss_mb()
    info = {k: res.info[k] for k in ("mode", "partitions", "partition_rows_max", "partition_modes") if k in res.info}
    return {"wall_s": round(wall, 2), "stages": {k: round(v, 2) for k, v in res.timings.items()},
            "selected": len(res.selected), "peak_rss_mb": round(rss1, 1),
            "rss_after_embeddings_mb": round(rss0, 1), **info}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="3000,30000,100000")
    parser.add_argument("--kinds", default="random,hashed")
    parser.add_argument("--modes", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "ROWS", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, n, mode = args.child
        print(json.dumps(child(kind, int(n), mode, args.seed)))
        return 0
    results = []
    for kind in args.kinds.split(","):
        if kind == "hashed" and not POOL.is_file():
            print(f"skipped hashed: {POOL} is absent")
            continue
        for n in [int(s) for s in args.sizes.split(",")]:
            for mode in args.modes.split(","):
                cmd = [sys.executable, __file__, "--child", kind, str(n), mode, "--seed", str(args.seed)]
                try:
                    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
                except subprocess.TimeoutExpired:
                    print(f"{kind} n={n} {mode}: over {args.timeout:.0f} s, stopped")
                    continue
                if proc.returncode:
                    print(f"{kind} n={n} {mode} failed:\n{proc.stderr[-2000:]}")
                    continue
                row = {"kind": kind, "rows": n, "asked": mode, **json.loads(proc.stdout.strip().splitlines()[-1])}
                results.append(row)
                print(json.dumps(row), flush=True)
    print("\n| embeddings | rows | mode | wall s | peak RSS MB | RSS after embeddings MB | stages | partitions |")
    print("|---|---:|---|---:|---:|---:|---|---|")
    for r in results:
        parts = f"{r['partitions']} (max {r['partition_rows_max']} rows)" if "partitions" in r else ""
        print(f"| {r['kind']} | {r['rows']} | {r['mode']} | {r['wall_s']} | {r['peak_rss_mb']} | "
              f"{r['rss_after_embeddings_mb']} | {r['stages']} | {parts} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
