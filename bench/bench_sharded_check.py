"""Sharded loss scoring on a real model, through the CLI: Ray and the process pool against
sequential, and a SIGKILL mid-run then resumed (issue 24, items 3 and the Done-when's checks).

The tests (tests/models/test_sharded_losses*.py, tests/execute/test_backends_sharded_ray.py)
check the same on a tiny random model in seconds; this runs ``shedkit select --method
lowest-loss`` on SmolLM2-135M over a real pool, four times, each with its own cold cache:

    sequential   one process, one torch thread
    ray          --backend ray --workers 2 (a local Ray instance, one CPU and thread a job)
    killed       --backend process --workers 2, the whole process group killed with SIGKILL once
                 ``--kill-after-parts`` loss-cache parts (finished shards) are on disk
    resumed      the same command again on the killed run's cache

and reports wall times, the parts on disk at the kill, the resumed run's computed/cached rows
(from its manifest), and whether every run's per-row losses and subset equal sequential's
exactly (the strings in scores.csv, bit for bit). One JSON with the machine and git hash.

    PYTHONPATH=src .venv/bin/python bench/bench_sharded_check.py POOL.jsonl --out /work/bench-out/sharded \\
        [--rows 1000] [--shard-size 128] [--kill-after-parts 2] [--json bench/results/scale/sharded_check.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import fresh_cache, machine_info  # noqa: E402


def shedkit(pool: Path, out: Path, cache: Path, extra: list[str]) -> list[str]:
    cmd = [str(Path(sys.executable).parent / "shedkit"), "select", str(pool), "--method", "lowest-loss", "--budget", "0.1",
           "--seed", "0", "--skip-empty", "--no-progress", "--out", str(out), "--cache-dir", str(cache), *extra]
    return cmd


def one_thread_env() -> dict:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = "1"
    return env


def run(cmd: list[str], log: Path) -> float:
    start = time.perf_counter()
    with log.open("w") as fh:
        subprocess.run(cmd, check=True, stdout=fh, stderr=subprocess.STDOUT, env=one_thread_env())
    return round(time.perf_counter() - start, 2)


def parts(cache: Path) -> list[Path]:
    return sorted((cache / "losses").glob("*/part-*.jsonl"))


def run_killed(cmd: list[str], cache: Path, log: Path, after_parts: int, timeout: float) -> dict:
    """Start ``cmd`` in its own process group; SIGKILL the group once ``after_parts`` parts exist."""
    start = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=one_thread_env(),
                                start_new_session=True)
        while proc.poll() is None and len(parts(cache)) < after_parts and time.perf_counter() - start < timeout:
            time.sleep(0.5)
        if proc.poll() is not None:
            raise SystemExit(f"the run ended (rc {proc.returncode}) before {after_parts} parts were written: "
                             "use more --rows or a smaller --shard-size")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(1.0)  # let the killed workers' exits settle before counting what is on disk
    done = parts(cache)
    rows_done = sum(len(p.read_text().splitlines()) for p in done)
    return {"killed_after_s": round(time.perf_counter() - start, 2), "returncode": proc.returncode,
            "parts_on_disk": len(done), "rows_on_disk": rows_done}


def scores(out: Path) -> tuple[dict[str, str], list[str]]:
    run_dir = next(p.parent for p in out.rglob("scores.csv"))
    with (run_dir / "scores.csv").open() as fh:
        table = {r["id"]: r["loss_base"] for r in csv.DictReader(fh)}
    subset = (run_dir / "subset.jsonl").read_text().splitlines()
    return table, subset


def manifest(out: Path) -> dict:
    return json.loads(next(out.rglob("manifest.json")).read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("pool", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rows", type=int, default=1000, help="the pool's first ROWS rows (0: all)")
    ap.add_argument("--shard-size", type=int, default=128)
    ap.add_argument("--kill-after-parts", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = ap.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    pool = args.pool
    if args.rows:
        pool = args.out / f"pool_{args.rows}.jsonl"
        with args.pool.open() as src:
            pool.write_text("".join(line for _, line in zip(range(args.rows), src)))
    model_cache = Path(os.environ.get("SHEDKIT_CACHE", Path.home() / ".cache" / "shedkit")) / "models"
    common = ["--shard-size", str(args.shard_size)]
    arms = {"sequential": [], "ray": ["--backend", "ray", "--workers", "2"],
            "killed": ["--backend", "process", "--workers", "2"]}
    result: dict = {"pool": str(args.pool), "rows": args.rows, "shard_size": args.shard_size,
                    "machine": machine_info(), "load1_start": os.getloadavg()[0],
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "arms": {}}
    for name, extra in arms.items():
        out, cache = args.out / name, fresh_cache(args.out / f"cache-{name}", model_cache)
        shutil.rmtree(out, ignore_errors=True)
        cmd = shedkit(pool, out, cache, [*common, *extra])
        arm: dict = {"command": "shedkit " + " ".join(cmd[1:])}
        if name == "killed":
            arm.update(run_killed(cmd, cache, args.out / f"{name}.log", args.kill_after_parts, args.timeout))
            shutil.rmtree(out, ignore_errors=True)
            arm["resumed_wall_s"] = run(cmd, args.out / "resumed.log")
            arm["resumed_base_losses"] = manifest(out)["method"]["base_losses"]
            arm["resumed_recomputes_nothing_done"] = arm["resumed_base_losses"]["cached"] == arm["rows_on_disk"]
        else:
            arm["wall_s"] = run(cmd, args.out / f"{name}.log")
            arm["base_losses"] = manifest(out)["method"]["base_losses"]
        result["arms"][name] = arm
        print(name, json.dumps(arm), flush=True)
    reference = scores(args.out / "sequential")
    for name in ("ray", "killed"):
        table, subset = scores(args.out / name)
        result["arms"][name]["losses_equal_sequential"] = table == reference[0]
        result["arms"][name]["subset_equal_sequential"] = subset == reference[1]
        result["arms"][name]["rows_scored"] = len(table)
    result["load1_end"] = os.getloadavg()[0]
    text = json.dumps(result, indent=1)
    (args.out / "sharded_check.json").write_text(text)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
