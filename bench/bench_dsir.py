"""DSIR: wall time and peak memory against pool size, and against the `data-selection` package.

Pools of 3k, 30k and 100k rows are the noisy-mix-v1 pool (3,000 rows) resampled with
replacement (seeded) and written as JSONL; the target is target_gsm8k_dev.jsonl. Each
(implementation, size) runs once in its own subprocess, which reports its wall time and peak
resident memory (VmHWM, see peak_rss_mb; "before" = after imports) and selects 10% by Gumbel-top-k:

* ``shedkit``: ``dsir_select`` with its defaults (sha256 buckets, Laplace smoothing), the pool
  streamed line by line from the file (so memory shows what DSIR itself holds);
* ``shedkit-murmur3``: the same with MurmurHash3 buckets;
* ``reference``: data-selection's HashedNgramDSIR (fit on all tokens, compute weights,
  resample), ``num_proc=1`` like shedkit (``--ref-procs`` to change), min_example_length=0.

    PYTHONPATH=src .venv/bin/python bench/bench_dsir.py [--sizes 3000,30000,100000] [--impls ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shedkit.util.memory import peak_rss_mb

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "bench" / "noisy-mix-v1"
IMPLS = ("shedkit", "shedkit-murmur3", "reference")


def row_text(row: dict) -> str:
    return "\n".join(str(v) for v in row.values() if v != "")


def child(impl: str, pool: str, target: str, budget: int, seed: int, ref_procs: int) -> dict:
    # Imports first: the figures are for the work, not for loading scikit-learn or nltk.
    if impl.startswith("shedkit"):
        from shedkit.selectors.dsir import dsir_select

        if impl.endswith("murmur3"):
            import sklearn.feature_extraction.text  # noqa: F401
        import scipy.sparse  # noqa: F401
    else:
        from data_selection import HashedNgramDSIR
    rss0 = peak_rss_mb()
    t0 = time.perf_counter()
    if impl.startswith("shedkit"):

        def pool_texts():
            with open(pool, encoding="utf-8") as fh:
                for line in fh:
                    yield row_text(json.loads(line))

        targets = [[row_text(json.loads(line)) for line in open(target, encoding="utf-8")]]
        hashing = "murmur3" if impl.endswith("murmur3") else "sha256"
        res = dsir_select(pool_texts, targets, budget, seed=seed, hashing=hashing)
        selected, stages = len(res.selected), {k: round(v, 2) for k, v in res.timings.items()}
    else:
        with tempfile.TemporaryDirectory() as tmp:
            ref = HashedNgramDSIR([pool], [target], cache_dir=f"{tmp}/cache", raw_parse_example_fn=row_text,
                                  target_parse_example_fn=row_text, num_proc=ref_procs, min_example_length=0)
            ref.fit_importance_estimator(num_tokens_to_fit="all")
            t1 = time.perf_counter()
            ref.compute_importance_weights()
            t2 = time.perf_counter()
            ref.resample(out_dir=f"{tmp}/out", num_to_sample=budget, cache_dir=f"{tmp}/rs", top_k=False)
            selected = sum(1 for _ in open(f"{tmp}/out/0.jsonl"))
            stages = {"fit": round(t1 - t0, 2), "weights": round(t2 - t1, 2),
                      "sample+write": round(time.perf_counter() - t2, 2)}
    wall = time.perf_counter() - t0
    rss1 = peak_rss_mb()
    return {"impl": impl, "wall_s": round(wall, 2), "stages": stages, "selected": selected,
            "peak_rss_mb": round(rss1, 1), "rss_before_mb": round(rss0, 1)}


def resampled_pool(n: int, seed: int, directory: Path) -> Path:
    import numpy as np

    lines = (BENCH / "pool.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    path = directory / f"pool_{n}.jsonl"
    if n == len(lines):
        path.write_text("".join(lines), encoding="utf-8")
    else:
        picks = np.random.default_rng(seed).integers(len(lines), size=n)
        path.write_text("".join(lines[i] for i in picks), encoding="utf-8")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="3000,30000,100000")
    parser.add_argument("--impls", default=",".join(IMPLS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ref-procs", type=int, default=1, help="num_proc for data-selection")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", nargs=4, metavar=("IMPL", "POOL", "TARGET", "BUDGET"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        impl, pool, target, budget = args.child
        print(json.dumps(child(impl, pool, target, int(budget), args.seed, args.ref_procs)))
        return 0
    if not (BENCH / "pool.jsonl").is_file():
        print(f"no benchmark data at {BENCH}")
        return 1
    target = BENCH / "target_gsm8k_dev.jsonl"
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(s) for s in args.sizes.split(",")]:
            pool = resampled_pool(n, args.seed, Path(tmp))
            for impl in args.impls.split(","):
                cmd = [sys.executable, __file__, "--child", impl, str(pool), str(target), str(n // 10),
                       "--seed", str(args.seed), "--ref-procs", str(args.ref_procs)]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode:
                    print(f"{impl} n={n} failed:\n{proc.stderr[-2000:]}")
                    continue
                row = {"rows": n, **json.loads(proc.stdout.strip().splitlines()[-1])}
                results.append(row)
                print(json.dumps(row), flush=True)
    print("\n| rows | impl | wall s | peak RSS MB | RSS before MB | stages |")
    print("|---:|---|---:|---:|---:|---|")
    for r in results:
        print(f"| {r['rows']} | {r['impl']} | {r['wall_s']} | {r['peak_rss_mb']} | {r['rss_before_mb']} | {r['stages']} |")
    by = {(r["rows"], r["impl"]): r["wall_s"] for r in results}
    for n in sorted({r["rows"] for r in results}):
        if (n, "reference") in by and (n, "shedkit") in by:
            print(f"rows {n}: reference / shedkit wall time = {by[(n, 'reference')] / by[(n, 'shedkit')]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
