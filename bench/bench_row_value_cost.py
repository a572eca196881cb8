"""Issue 23 item 2, side by side: the cost of a first-order valuation by the code the issue was
filed against and by today's, on the same rows, one after the other in one run.

Each arm is one ``shedkit select`` process (its own cold cache dir) started with PYTHONPATH at
that code's ``src``, so both load the same way; the arms are:

- ``old-all``:  the old code's first-order row as the bench ran it (raw, LoRA on every layer);
- ``old-last4``: the old code with ``--fo-layers 4`` (what the old code could already do);
- ``new-less``: today's ``first-order-less`` row (``--fo-normalize less --fo-layers 4``).

Rows: every K-th row of noisy-mix-v1 (the pool's mix), target the first 50 Alpaca dev rows,
max_length 256, seed 0, each method's other defaults. Per arm: wall seconds, the manifest's
stage timings, peak resident memory (/usr/bin/time), rows/s; ratios against ``new-less``.
The old code is a git worktree made by the caller:

    git worktree add --detach /work/old b7d426a
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_row_value_cost.py --old-src /work/old/src \\
        --every 5 --out /work/bench-out/cost
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / ".." / "shared" / "bench" / "noisy-mix-v1"
ARMS = {
    "old-all": ("old", []),
    "old-last4": ("old", ["--fo-layers", "4"]),
    "new-less": ("new", ["--fo-normalize", "less", "--fo-layers", "4"]),
}


def subset(suite: Path, dest: Path, every: int, dev_rows: int) -> tuple[Path, Path]:
    dest.mkdir(parents=True, exist_ok=True)
    lines = [ln for ln in (suite / "pool.jsonl").read_text(encoding="utf-8").splitlines() if ln.strip()]
    pool = dest / f"pool-every{every}.jsonl"
    pool.write_text("".join(ln + "\n" for ln in lines[::every]), encoding="utf-8")
    dev_lines = (suite / "target_alpaca_dev.jsonl").read_text(encoding="utf-8").splitlines()[:dev_rows]
    dev = dest / f"alpaca_dev_head{dev_rows}.jsonl"
    dev.write_text("".join(ln + "\n" for ln in dev_lines), encoding="utf-8")
    return pool, dev


def git_head(src: Path) -> str:
    return subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()


def run_arm(name: str, src: Path, extra: list[str], pool: Path, dev: Path, out: Path, model: str, max_length: int) -> dict:
    run_dir, cache = out / "runs" / name, out / "cache" / name
    for d in (run_dir, cache):
        if d.exists():
            subprocess.run(["rm", "-rf", str(d)], check=True)
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "shedkit.cli.main", "select", str(pool),
           "--method", "first-order", "--budget", "0.1", "--target", str(dev), "--model", model,
           "--max-length", str(max_length), "--seed", "0", "--skip-empty", "--no-progress",
           "--cache-dir", str(cache), "--out", str(run_dir), *extra]
    load = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    peak_kb = int(proc.stderr.strip().splitlines()[-1])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    info = manifest.get("method", {})
    fo = info.get("first_order", info)
    rows = sum(1 for _ in open(pool, encoding="utf-8"))
    return {"arm": name, "code": git_head(src), "args": extra, "rows": rows, "wall_s": round(wall, 1),
            "rows_per_s": round(rows / wall, 3), "peak_rss_mb": round(peak_kb / 1024),
            "load_before": [round(x, 2) for x in load], "load_after": [round(x, 2) for x in os.getloadavg()],
            "timings": fo.get("timings"), "row_gradients_computed": fo.get("row_gradients_computed"),
            "command": cmd[3:]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old-src", required=True, type=Path, help="src/ of the code the issue was filed against")
    p.add_argument("--new-src", type=Path, default=ROOT / "src")
    p.add_argument("--suite", type=Path, default=SUITE)
    p.add_argument("--every", type=int, default=5, help="every K-th pool row (5: 600 of 3,000)")
    p.add_argument("--dev-rows", type=int, default=50)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if not (args.suite / "pool.jsonl").exists():
        print(f"skipped: no noisy-mix-v1 at {args.suite} (see ../shared/bench/PROVENANCE.md)", file=sys.stderr)
        return 0
    pool, dev = subset(args.suite, args.out / "inputs", args.every, args.dev_rows)
    from shedkit.evaluate.bench import machine

    res = {"machine": machine(), "threads_env": os.environ.get("OMP_NUM_THREADS"), "every": args.every, "arms": []}
    for name in args.arms.split(","):
        which, extra = ARMS[name]
        src = args.old_src if which == "old" else args.new_src
        arm = run_arm(name, src, extra, pool, dev, args.out, args.model, args.max_length)
        res["arms"].append(arm)
        print(json.dumps({k: arm[k] for k in ("arm", "code", "wall_s", "peak_rss_mb", "load_after")}), flush=True)
        (args.out / "cost.json").write_text(json.dumps(res, indent=1))
    walls = {a["arm"]: a["wall_s"] for a in res["arms"]}
    if "new-less" in walls:
        res["ratio_vs_new_less"] = {k: round(v / walls["new-less"], 2) for k, v in walls.items()}
    (args.out / "cost.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res.get("ratio_vs_new_less"), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
