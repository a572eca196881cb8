"""Scale bench: every selection method end to end through ``shedkit select`` at 10k, 30k and 100k rows.

Issue 24 item 1. Per (method, pool size) cell: wall time, peak resident memory, the per-stage
timings of the run's manifest, the ``--dry-run`` estimate beside the measurement, the sizes of
report.html and scores.csv, and the corrupted share of the selection; per method, the growth
exponent of each stage in pool size (least-squares slope of log time on log rows).

Pools. The noisy-mix-v1 pool (``../shared/bench/noisy-mix-v1``: 3,000 real rows of
``../shared/data``, 24% with v1's labelled corruption) resampled to N rows in seeded passes:
each pass is a permutation of the 3,000 rows, the last one cut short, and the N rows are then
shuffled, so each row appears N/3000 times (±1) and the corrupted share is the suite's at every
size. No paraphrase: copy 0 of a row is verbatim, copy k >= 1 has `` [copy k]`` appended to its
instruction. That marker is needed: shedkit's record id is a hash of the row's content, and the
embedding and loss caches key on it, so exact copies would be embedded and scored once and a
100k pool would cost what 3k cost. Each row also gets an ``id`` column ``<line>#<copy>``; its
label (source, corruption kind) is in ``pool_<N>_seed<S>_labels.jsonl`` on the same line.
Pools are written under OUT/pools, never into the repository.

Cells. Each cell first runs the command with ``--dry-run`` (the plan: per-stage seconds on this
CPU from timed samples, on a GPU from FLOPs, and memory; OUT/runs/<cell>/dry/work/dry_run.json),
then the same command for real. The real run is skipped, and the cell kept as "planned", when
the cell is in ``--dry-run-only`` or the plan says it would take over ``--max-estimate-h``
hours here: the plan's GPU figure then says what it needs on a GPU. Each run is its own process,
``python bench/bench_scale.py --cli-child RESULT -- select ...``, a small wrapper around
``shedkit.cli.main.main`` (the console script's entry point), with OMP/MKL/OpenBLAS threads set
to ``--threads`` (``shedkit select`` has no ``--threads`` flag; torch reads OMP_NUM_THREADS) and
its own ``--cache-dir`` under OUT/cache, emptied first (cold) unless ``--warm``, which reruns
cells on the cache their cold run left. The cache's ``models/`` is a link to the shared model
cache (``--model-cache``), so converting SmolLM2's GGUF, done once per machine, is not timed.

Memory. The peak resident memory of a run is the wrapper's own VmHWM (``/proc/self/status``;
the process is a fresh exec, so the peak is its own, not the bench's). Per top-level stage of
``shedkit.pipeline.select`` (load, select, write, report: the manifest's ``timings``) the wrapper
also resets VmHWM when the stage starts (``echo 5 > /proc/self/clear_refs``, Linux >= 4.0) and
reads it when it ends, by wrapping ``shedkit.report.manifest.Timer``; the run's peak is the
maximum over those readings. Worker processes (``--backend process``/``ray``) are not in VmHWM:
their largest ru_maxrss is recorded as ``children_peak_rss_mb`` (a fork inherits the parent's
figure, so it is an upper bound). The 1-minute load average is recorded at the start and end of
every cell, so figures taken on a busy machine show as such.

Every finished cell is written at once to OUT/cells/<method>-<rows>.json; a rerun skips finished
cells (``--force`` to redo; failed cells are always redone). ``--table`` only rebuilds
OUT/results.json and OUT/results.md from the cells. "Within 30%" means |estimate - measured| <=
0.3 x measured, for the total, for load / method / write+report, for the method's own stages
where plan and manifest name them (``FINE_PAIRS``) and for the peak memory. report.html's size is
checked against 5 MB; the time it takes to open in a browser is bench_report_open.py's (Chromium).
The methods' flags are ``METHODS``; ``--flags 'shed-qwcs-shapley=--permutations 2'`` adds flags to
one method, ``--extra`` to all.

    # the real run (hours; 1 thread; under the shared heavy-job lock, one cell at a time):
    nice -n 10 env PYTHONPATH=src .venv/bin/python bench/bench_scale.py --out /work/bench-out/scale \\
        --lock /tmp/shedkit-heavy.lock [--sizes 10000,30000,100000] [--methods random,dsir,...]
    # the heavy cells only planned (their GPU need is in the plan):
    ... --dry-run-only shed-qwcs-shapley@30000,shed-qwcs-shapley@100000   (the default)
    # tables from the finished cells, nothing run:
    PYTHONPATH=src .venv/bin/python bench/bench_scale.py --out /work/bench-out/scale --table
    # a model-free try (seconds):
    PYTHONPATH=src .venv/bin/python bench/bench_scale.py --out /tmp/scale-try --sizes 500,1000 \\
        --methods random,dsir,dq --embedder hashed-ngrams
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO.parent / "shared" / "bench" / "noisy-mix-v1"
TARGET = "target_alpaca_dev.jsonl"
BUDGET = "0.1"
REPORT_LIMIT_MB = 5.0

#: bench method -> `shedkit select` flags ({target}: the suite's Alpaca dev set)
METHODS: dict[str, tuple[str, ...]] = {
    "random": ("--method", "random"),
    "dsir": ("--method", "dsir", "--target", "{target}"),
    "dq": ("--method", "dq"),
    "filtered-random": ("--method", "filtered-random"),
    "lowest-loss": ("--method", "lowest-loss"),
    "shed-qwcs-fo": ("--method", "shed-qwcs", "--cluster-value", "first-order", "--target", "{target}"),
    "shed-qwcs-shapley": ("--method", "shed-qwcs", "--clusters", "300", "--target", "{target}"),
}
#: methods that embed the pool (``--embedder`` goes to these only)
EMBEDDING_METHODS = ("dq", "shed-qwcs-fo", "shed-qwcs-shapley")
DEFAULT_DRY_RUN_ONLY = "shed-qwcs-shapley@30000,shed-qwcs-shapley@100000"

#: dry-run stages vs measured method_timings, per bench method: (part, measured keys, plan stages).
#: A run's base_losses includes loading the model; its value stage, the model and the fine-tunes.
VALUE_STAGES = ("load_model", "warmup_fine_tune", "dev_gradients", "target_directions", "center_gradients",
                "row_gradients", "proxy_fine_tunes")
SHED_PAIRS = [("embed", ["embed"], ["embed"]), ("k-means", ["cluster"], ["kmeans"]),
              ("value", ["value"], list(VALUE_STAGES)), ("sample", ["sample"], ["sample"])]
FINE_PAIRS: dict[str, list[tuple[str, list[str], list[str]]]] = {
    "dsir": [("targets", ["load_targets"], ["load_targets"]),
             ("n-grams, weights, draw", ["fit", "weights", "sample"], ["dsir_weights"])],
    "dq": [("embed", ["embed"], ["embed"]), ("GraphCut bins", ["bins"], ["graphcut_bins"]),
           ("draw", ["sample"], ["select"])],
    "filtered-random": [("model + losses", ["base_losses"], ["load_model", "base_losses"]),
                        ("response-alone losses", ["response_alone_losses"], ["response_alone_losses"])],
    "lowest-loss": [("model + losses", ["base_losses"], ["load_model", "base_losses"])],
    "shed-qwcs-fo": SHED_PAIRS,
    "shed-qwcs-shapley": SHED_PAIRS,
}


# -- pools --------------------------------------------------------------------------------------

def resample_plan(m: int, n: int, seed: int):
    """``(lines, copies)``: N draws from M rows in seeded passes (each a permutation of the M
    rows, the last cut short), shuffled; ``copies[i]`` is the pass that drew row ``lines[i]``,
    so (line, copy) pairs are unique."""
    import numpy as np

    rng = np.random.default_rng(seed)
    passes = -(-n // m)
    lines = np.concatenate([rng.permutation(m) for _ in range(passes)])[:n]
    copies = np.repeat(np.arange(passes), m)[:n]
    order = rng.permutation(n)
    return lines[order], copies[order]


def unique_row(row: dict, line: int, copy: int) -> dict:
    """The row with an ``id`` column ``<line>#<copy>``; copy k >= 1 has `` [copy k]`` after its
    instruction, so its content (and shedkit's content-hash record id) differs from the others'."""
    if "instruction" not in row:
        raise ValueError(f"line {line}: an Alpaca-style row (instruction/output) is expected")
    out = {"id": f"{line}#{copy}", **row}
    if copy:
        out["instruction"] = f"{row['instruction']} [copy {copy}]"
    return out


def synthesise_pool(n: int, seed: int, suite: Path, directory: Path) -> tuple[Path, Path]:
    """``(pool, labels)`` JSONL files of N rows (see the module doc); reused when present."""
    pool = directory / f"pool_{n}_seed{seed}.jsonl"
    labels = directory / f"pool_{n}_seed{seed}_labels.jsonl"
    if pool.is_file() and labels.is_file():
        return pool, labels
    rows = [json.loads(x) for x in (suite / "pool.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    marks = [json.loads(x) for x in (suite / "pool_labels.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    if len(rows) != len(marks):
        raise ValueError(f"{suite}: {len(rows)} pool rows but {len(marks)} labels")
    lines, copies = resample_plan(len(rows), n, seed)
    pool_text, label_text = [], []
    for line, copy in zip(lines.tolist(), copies.tolist()):
        row = unique_row(rows[line], line, copy)
        pool_text.append(json.dumps(row, ensure_ascii=False) + "\n")
        label_text.append(json.dumps({"id": row["id"], "line": line, "copy": copy, "source": marks[line].get("source"),
                                      "label": marks[line]["label"]}) + "\n")
    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(labels, "".join(label_text))
    write_atomic(pool, "".join(pool_text))
    return pool, labels


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# -- the wrapper process: one `shedkit` command, its peak memory per stage ----------------------

def _hwm_mb() -> float:
    from shedkit.util.memory import peak_rss_mb

    return peak_rss_mb()


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class StagePeaks:
    """Peak VmHWM per ``Timer`` stage (reset when a stage starts; nested stages pass their
    peak up) and the process's peak: the maximum of every reading."""

    def __init__(self) -> None:
        self.peaks: dict[str, float] = {}
        self.open: list[list[Any]] = []  # [stage, peak so far]
        self.seen = _hwm_mb()  # the start-up's peak, before the first reset
        self.exact = _reset_hwm()

    def enter(self, stage: str) -> None:
        h = _hwm_mb()
        for s in self.open:
            s[1] = max(s[1], h)
        self.seen = max(self.seen, h)
        _reset_hwm()
        self.open.append([stage, 0.0])

    def leave(self) -> None:
        h = _hwm_mb()
        stage, peak = self.open.pop()
        peak = max(peak, h)
        self.peaks[stage] = max(self.peaks.get(stage, 0.0), peak)
        for s in self.open:
            s[1] = max(s[1], peak)
        self.seen = max(self.seen, h)

    def overall(self) -> float:
        return max(self.seen, _hwm_mb())

    def install(self) -> None:
        from shedkit.report import manifest

        original = manifest.Timer.__call__
        tracker = self

        @contextlib.contextmanager
        def call(timer, stage):
            tracker.enter(stage)
            try:
                with original(timer, stage):
                    yield
            finally:
                tracker.leave()

        manifest.Timer.__call__ = call


def cli_child(result: Path, argv: list[str]) -> int:
    """Run ``shedkit ARGV`` in this process and write its figures to ``result`` (JSON)."""
    import resource

    t0 = time.perf_counter()
    tracker = StagePeaks()
    from shedkit.cli.main import main

    tracker.install()
    after_import = _hwm_mb()
    sys.argv = ["shedkit", *argv]  # the manifest records the command from sys.argv
    t1 = time.perf_counter()
    code = main(argv)
    cli_s = time.perf_counter() - t1
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    out = {"rc": code, "import_s": round(t1 - t0, 3), "cli_s": round(cli_s, 3),
           "peak_rss_mb": round(tracker.overall(), 1), "rss_after_import_mb": round(after_import, 1),
           "stage_peak_rss_mb": {k: round(v, 1) for k, v in tracker.peaks.items()},
           "stage_peaks_exact": tracker.exact, "children_peak_rss_mb": round(children, 1)}
    write_atomic(result, json.dumps(out))
    return code


# -- the cells ------------------------------------------------------------------------------------

def machine_info() -> dict[str, Any]:
    def run(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            return ""

    model = next((line.split(":", 1)[1].strip() for line in run(["lscpu"]).splitlines()
                  if line.startswith("Model name")), "")
    try:
        flags = set(re.findall(r"\w+", next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                                             if line.startswith("flags")).split(":", 1)[1]))
    except (OSError, StopIteration):
        flags = set()
    return {"git": run(["git", "rev-parse", "HEAD"]).strip(),
            "git_src_dirty": bool(run(["git", "status", "--porcelain", "--", "src"]).strip()),
            "cpu": model, "cpus": os.cpu_count(), "amx": "amx_bf16" in flags or "amx_tile" in flags,
            "avx512_bf16": "avx512_bf16" in flags, "python": sys.version.split()[0]}


def parse_cells(spec: str) -> set[tuple[str, int]]:
    """``"m@10000,m2@30000"`` -> {(m, 10000), (m2, 30000)}."""
    out = set()
    for item in filter(None, (s.strip() for s in spec.split(","))):
        method, _, rows = item.partition("@")
        if method not in METHODS or not rows.isdigit():
            raise SystemExit(f"--dry-run-only: {item!r} is not METHOD@ROWS with METHOD one of {', '.join(METHODS)}")
        out.add((method, int(rows)))
    return out


def method_flags(method: str, args) -> list[str]:
    flags = [f.format(target=args.suite / TARGET) for f in METHODS[method]]
    if args.embedder and method in EMBEDDING_METHODS:
        flags += ["--embedder", args.embedder]
    for item in args.flags:
        name, _, extra = item.partition("=")
        if name == method:
            flags += shlex.split(extra)
    return flags + shlex.split(args.extra)


def run_child(argv: list[str], result: Path, log: Path, threads: int, timeout: float | None) -> dict[str, Any]:
    """``shedkit ARGV`` in the wrapper process: its figures, wall time and exit status."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "OPENBLAS_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    result.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--cli-child", str(result), "--", *argv]
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            return {"status": "timeout", "wall_s": round(time.perf_counter() - t0, 2), "timeout_s": timeout}
    wall = time.perf_counter() - t0
    figures = json.loads(result.read_text()) if result.is_file() else {}
    status = "ok" if proc.returncode == 0 and figures.get("rc") == 0 else "failed"
    out = {"status": status, "wall_s": round(wall, 2), "returncode": proc.returncode, **figures}
    if status == "failed":
        out["log_tail"] = log.read_text(errors="replace")[-3000:]
    return out


def fresh_cache(path: Path, model_cache: Path | None, keep: bool = False) -> Path:
    """``path`` emptied (unless ``keep``), its ``models`` a link to the shared model cache."""
    if path.exists() and not keep:
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    link = path / "models"
    if model_cache is not None and model_cache.is_dir() and not link.exists():
        link.symlink_to(model_cache.resolve(), target_is_directory=True)
    return path


def plan_summary(plan: dict[str, Any]) -> dict[str, Any]:
    total = plan.get("total", {})
    return {"seconds": total.get("seconds"), "gpu_seconds": total.get("gpu_seconds"),
            "gpu": plan.get("gpu", {}).get("name"),
            "peak_memory_gb": total.get("peak_memory_gb"), "complete": total.get("complete"),
            "stages": [{k: s.get(k) for k in ("name", "seconds", "gpu_seconds", "memory_gb", "work")}
                       for s in plan.get("stages", [])]}


def comparisons(method: str, estimate: dict[str, Any], timings: dict[str, float],
                method_timings: dict[str, float]) -> list[dict[str, Any]]:
    """Estimated vs measured seconds: load, the method, write (+report), the total, and the
    method's own stages (``FINE_PAIRS``) where both sides have them."""
    plan = {s["name"]: s.get("seconds") for s in estimate.get("stages", [])}

    def planned(names: Iterable[str]) -> float | None:
        got = [plan[n] for n in names if n in plan]
        return None if not got or any(v is None for v in got) else float(sum(got))

    outer = {"load_pool", "write"}
    rows = [("load", planned(["load_pool"]), timings.get("load")),
            ("method", planned([n for n in plan if n not in outer]), timings.get("select")),
            ("write + report", planned(["write"]), timings.get("write", 0.0) + timings.get("report", 0.0)),
            ("total", estimate.get("seconds"), sum(timings.values()) if timings else None)]
    for part, measured_keys, plan_names in FINE_PAIRS.get(method, []):
        if all(k in method_timings for k in measured_keys):
            rows.append((f"  {part}", planned(plan_names), sum(method_timings[k] for k in measured_keys)))
    out = []
    for part, est, got in rows:
        if est is None or got is None:
            continue
        ratio = got / est if est > 0 else None
        out.append({"part": part, "estimated_s": round(est, 3), "measured_s": round(got, 3),
                    "measured_over_estimated": None if ratio is None else round(ratio, 3),
                    "within_30pct": abs(est - got) <= 0.3 * got})
    return out


def corrupted_share(scores: Path, labels: Path) -> dict[str, Any]:
    """The corrupted share of the selected rows and of the pool (scores.csv's ``row`` is the
    line in the pool file, the labels file's line too)."""
    marks = [json.loads(x)["label"] for x in labels.read_text(encoding="utf-8").splitlines() if x.strip()]
    with open(scores, newline="", encoding="utf-8") as fh:
        picked = [marks[int(r["row"])] for r in csv.DictReader(fh) if r["selected"] == "1"]
    bad = sum(label != "clean" for label in picked)
    return {"selected": len(picked), "selected_corrupted_share": round(bad / max(len(picked), 1), 4),
            "pool_corrupted_share": round(sum(label != "clean" for label in marks) / max(len(marks), 1), 4)}


def file_mb(path: Path) -> float | None:
    return round(path.stat().st_size / 2**20, 3) if path.is_file() else None


def cell_name(method: str, n: int, warm: bool) -> str:
    return f"{method}-{n}" + ("-warm" if warm else "")


def would_plan_only(method: str, n: int, estimate_s: float | None, args) -> str | None:
    """Why the real run of this cell is skipped (None: it runs)."""
    if (method, n) in args.dry_run_only_cells:
        return "in --dry-run-only"
    if estimate_s is not None and estimate_s > args.max_estimate_h * 3600:
        return f"the dry run estimates {estimate_s / 3600:.1f} h here (> --max-estimate-h {args.max_estimate_h:g})"
    return None


def finished(path: Path, method: str, n: int, args) -> bool:
    if args.force or not path.is_file():
        return False
    cell = json.loads(path.read_text())
    if cell["status"] == "planned":  # redo it when the settings now would run it
        return would_plan_only(method, n, (cell.get("estimate") or {}).get("seconds"), args) is not None
    return cell["status"] in ("ok", "timeout")


def run_cell(method: str, n: int, args) -> dict[str, Any]:
    name = cell_name(method, n, args.warm)
    pool, labels = synthesise_pool(n, args.seed, args.suite, args.out / "pools")
    base = ["select", str(pool), *method_flags(method, args), "--budget", BUDGET, "--seed", str(args.seed),
            "--no-progress", "--skip-empty"]  # the v1 pool has one row with an empty response
    runs = args.out / "runs" / name
    runs.mkdir(parents=True, exist_ok=True)
    cell: dict[str, Any] = {"method": method, "rows": n, "warm": args.warm, "threads": args.threads,
                            "command": "shedkit " + shlex.join(base), "machine": machine_info(),
                            "load1_start": round(os.getloadavg()[0], 2),
                            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    # 1. the plan
    dry_out = runs / "dry"
    shutil.rmtree(dry_out, ignore_errors=True)
    cache = fresh_cache(args.out / "cache" / f"{method}-{n}-dry", args.model_cache)
    dry = run_child([*base, "--out", str(dry_out), "--cache-dir", str(cache), "--dry-run", "--dry-run-gpu", args.gpu],
                    runs / "dry.json", runs / "dry.log", args.threads, args.timeout or 1800.0)
    plan_file = dry_out / "work" / "dry_run.json"
    cell["dry_run"] = {k: dry.get(k) for k in ("status", "wall_s", "peak_rss_mb", "log_tail") if k in dry}
    cell["estimate"] = plan_summary(json.loads(plan_file.read_text())) if plan_file.is_file() else None
    shutil.rmtree(cache, ignore_errors=True)
    # 2. the run, unless only planned
    est = (cell["estimate"] or {}).get("seconds")
    why = would_plan_only(method, n, est, args)
    if why is not None:
        cell.update(status="planned", planned_because=why)
    else:
        run_out = runs / "run"
        shutil.rmtree(run_out, ignore_errors=True)
        cache_dir = args.out / "cache" / f"{method}-{n}"
        if args.warm and not cache_dir.is_dir():
            cell.update(status="failed", error=f"--warm: no cache at {cache_dir}; run the cell without --warm first")
        else:
            cache = fresh_cache(cache_dir, args.model_cache, keep=args.warm)
            timeout = args.timeout if args.timeout else max(1800.0, 3 * (est or 0.0))
            res = run_child([*base, "--out", str(run_out), "--cache-dir", str(cache)], runs / "run.json",
                            runs / "run.log", args.threads, timeout)
            cell.update(res)
            manifest_path = run_out / "manifest.json"
            if res["status"] == "ok" and manifest_path.is_file():
                manifest = json.loads(manifest_path.read_text())
                cell["timings"] = manifest.get("timings", {})
                cell["method_timings"] = manifest.get("method_timings", {})
                cell["files_mb"] = {"report.html": file_mb(run_out / "report.html"),
                                    "scores.csv": file_mb(run_out / "scores.csv"),
                                    "subset": file_mb(next(iter(sorted(run_out.glob("subset*"))), run_out / "-"))}
                cell["report_under_5mb"] = (cell["files_mb"]["report.html"] or 0.0) < REPORT_LIMIT_MB
                cell.update(corrupted_share(run_out / "scores.csv", labels))
                if cell["estimate"]:
                    cell["vs_estimate"] = comparisons(method, cell["estimate"], cell["timings"], cell["method_timings"])
                    est_mb = (cell["estimate"].get("peak_memory_gb") or 0.0) * 1024
                    cell["memory_vs_estimate"] = {
                        "estimated_mb": round(est_mb, 1), "measured_mb": cell.get("peak_rss_mb"),
                        "measured_over_estimated": round(cell["peak_rss_mb"] / est_mb, 3) if est_mb else None,
                        "within_30pct": bool(est_mb) and abs(est_mb - cell["peak_rss_mb"]) <= 0.3 * cell["peak_rss_mb"]}
            if args.drop_caches and not args.warm:
                shutil.rmtree(cache, ignore_errors=True)
    cell["load1_end"] = round(os.getloadavg()[0], 2)
    cell["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return cell


@contextlib.contextmanager
def held(lock: Path | None):
    """The shared heavy-job lock (the one ``flock LOCK`` takes in bench/run_noisy_mix.sh)."""
    if lock is None:
        yield
        return
    import fcntl

    with open(lock, "a") as fh:
        print(f"[{time.strftime('%H:%M:%S')}] waiting for {lock}", flush=True)
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# -- tables -------------------------------------------------------------------------------------

def growth_exponent(sizes: Sequence[float], values: Sequence[float | None]) -> float | None:
    """Least-squares slope of log(value) on log(size) over the positive pairs (None: < 2 sizes)."""
    pairs = [(math.log(s), math.log(v)) for s, v in zip(sizes, values) if v is not None and v > 0 and s > 0]
    if len({x for x, _ in pairs}) < 2:
        return None
    mx = sum(x for x, _ in pairs) / len(pairs)
    my = sum(y for _, y in pairs) / len(pairs)
    return sum((x - mx) * (y - my) for x, y in pairs) / sum((x - mx) ** 2 for x, _ in pairs)


def stage_series(cells: list[dict[str, Any]]) -> dict[str, dict[int, float]]:
    """Per measured quantity: {rows: value} over a method's finished cells."""
    out: dict[str, dict[int, float]] = {}

    def put(key: str, n: int, value: Any) -> None:
        if value is not None:
            out.setdefault(key, {})[n] = float(value)

    for c in cells:
        n = c["rows"]
        timings, inner = c.get("timings", {}), c.get("method_timings", {})
        for stage in ("load", "select"):
            put(f"{stage} s", n, timings.get(stage))
        for key, value in inner.items():
            put(f"  {key} s", n, value)
        for stage in ("write", "report"):
            put(f"{stage} s", n, timings.get(stage))
        if "cli_s" in c and timings:
            put("untimed s (CLI start, embedding map, manifest)", n, max(c["cli_s"] - sum(timings.values()), 0.0))
        put("wall s (process)", n, c.get("wall_s"))
        for stage, mb in c.get("stage_peak_rss_mb", {}).items():
            put(f"peak RSS MB: {stage}", n, mb)
        put("peak RSS MB", n, c.get("peak_rss_mb"))
        if c.get("peak_rss_mb") is not None and c.get("rss_after_import_mb") is not None:
            put("peak RSS MB above the CLI's imports", n, c["peak_rss_mb"] - c["rss_after_import_mb"])
    return out


def fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return ""
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:,.0f}"
    return str(x)


def build_results(out: Path) -> dict[str, Any]:
    order = {m: i for i, m in enumerate(METHODS)}
    cells = sorted((json.loads(p.read_text()) for p in (out / "cells").glob("*.json")),
                   key=lambda c: (order.get(c["method"], len(order)), c["warm"], c["rows"]))
    methods: dict[str, Any] = {}
    for key in dict.fromkeys((c["method"], c["warm"]) for c in cells):
        group = [c for c in cells if (c["method"], c["warm"]) == key]
        done = [c for c in group if c["status"] == "ok"]
        series = stage_series(done)
        planned = [(c["rows"], (c.get("estimate") or {}).get("seconds")) for c in group]
        gpu = [(c["rows"], (c.get("estimate") or {}).get("gpu_seconds")) for c in group]
        methods[key[0] + (" (warm)" if key[1] else "")] = {
            "series": {k: {str(n): v for n, v in sorted(s.items())} for k, s in series.items()},
            "exponents": {k: growth_exponent(list(s), list(s.values())) for k, s in series.items()},
            "estimate_exponent": growth_exponent([n for n, _ in planned], [v for _, v in planned]),
            "estimate_gpu_exponent": growth_exponent([n for n, _ in gpu], [v for _, v in gpu]),
        }
    return {"bench": "scale", "suite": str(SUITE), "budget": BUDGET, "machine": machine_info(),
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cells": cells, "methods": methods}


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    gits = sorted({c["machine"]["git"][:9] for c in results["cells"] if c.get("machine")})
    lines = [f"# Scale bench ({results['written']})", "",
             f"shedkit {', '.join(gits) or m['git'][:9]} (tables built at {m['git'][:9]}); CPU {m['cpu']}, "
             f"{m['cpus']} CPUs, AMX {fmt(m['amx'])}, AVX512-BF16 {fmt(m['avx512_bf16'])}; budget {results['budget']}; "
             f"pools: noisy-mix-v1 resampled (bench/bench_scale.py). Wall s: the whole process; peak RSS: its VmHWM. "
             f"Load: 1-minute load average at the cell's start -> end.", "",
             "## Cells", "",
             "| method | rows | status | wall s | peak RSS MB | est. MB | est. s here | measured/est. (total) "
             "| within 30% | est. GPU s | report.html MB | < 5 MB | scores.csv MB | corrupted: selection / pool "
             "| load | threads |",
             "|---|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---|---:|---|---|---:|"]
    for c in results["cells"]:
        est = c.get("estimate") or {}
        total = next((r for r in c.get("vs_estimate", []) if r["part"] == "total"), {})
        files = c.get("files_mb", {})
        status = c["status"] + (f" ({c['planned_because']})" if c.get("planned_because") else "")
        corrupt = (f"{c['selected_corrupted_share']:.3f} / {c['pool_corrupted_share']:.3f}"
                   if "selected_corrupted_share" in c else "")
        lines.append(f"| {c['method']}{' (warm)' if c['warm'] else ''} | {c['rows']:,} | {status} | "
                     f"{fmt(c.get('wall_s') if c['status'] == 'ok' else None)} | {fmt(c.get('peak_rss_mb'))} | "
                     f"{fmt(est['peak_memory_gb'] * 1024 if est.get('peak_memory_gb') else None)} | "
                     f"{fmt(est.get('seconds'))} | {fmt(total.get('measured_over_estimated'))} | "
                     f"{fmt(total.get('within_30pct'))} | {fmt(est.get('gpu_seconds'))} ({est.get('gpu') or ''}) | "
                     f"{fmt(files.get('report.html'))} | {fmt(c.get('report_under_5mb'))} | "
                     f"{fmt(files.get('scores.csv'))} | "
                     f"{corrupt} | {c.get('load1_start')} -> {c.get('load1_end')} | {c.get('threads')} |")
    lines += ["", "## Stages by pool size", "",
              "Seconds per stage of the manifest (`timings`; the method's own `method_timings` indented), peak "
              "RSS per top-level stage, and the growth exponent: the least-squares slope of log value on log rows "
              "over the sizes measured (1: linear, 2: quadratic).", ""]
    for name, info in results["methods"].items():
        sizes = sorted({int(n) for s in info["series"].values() for n in s})
        lines += [f"### {name}", ""]
        if not sizes:
            lines += ["(no finished run)", ""]
        else:
            lines += ["| stage | " + " | ".join(f"{n:,}" for n in sizes) + " | exponent |",
                      "|---|" + "---:|" * (len(sizes) + 1)]
            for key, s in info["series"].items():
                lines.append(f"| {key} | " + " | ".join(fmt(s.get(str(n))) for n in sizes)
                             + f" | {fmt(info['exponents'].get(key))} |")
            lines.append("")
        lines += [f"Dry-run estimate's exponent: {fmt(info['estimate_exponent']) or 'n/a'} here, "
                  f"{fmt(info['estimate_gpu_exponent']) or 'n/a'} on the GPU.", ""]
    lines += ["## Dry-run estimate vs measured", "",
              "| method | rows | part | estimated s | measured s | measured/est. | within 30% |",
              "|---|---:|---|---:|---:|---:|---|"]
    for c in results["cells"]:
        for r in c.get("vs_estimate", []):
            lines.append(f"| {c['method']}{' (warm)' if c['warm'] else ''} | {c['rows']:,} | {r['part']} | "
                         f"{fmt(r['estimated_s'])} | {fmt(r['measured_s'])} | {fmt(r['measured_over_estimated'])} | "
                         f"{fmt(r['within_30pct'])} |")
    return "\n".join(lines) + "\n"


def write_tables(out: Path) -> dict[str, Any]:
    results = build_results(out)
    write_atomic(out / "results.json", json.dumps(results, indent=1))
    write_atomic(out / "results.md", markdown(results))
    return results


# -- main ---------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--cli-child"]:
        rest = argv[2:]
        return cli_child(Path(argv[1]), rest[1:] if rest[:1] == ["--"] else rest)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output folder (pools, runs, caches, cells, results)")
    parser.add_argument("--sizes", default="10000,30000,100000")
    parser.add_argument("--methods", default=",".join(METHODS), help=", ".join(METHODS))
    parser.add_argument("--dry-run-only", default=DEFAULT_DRY_RUN_ONLY, metavar="METHOD@ROWS,...",
                        help="cells only planned (default: %(default)s; '' for none)")
    parser.add_argument("--max-estimate-h", type=float, default=3.0,
                        help="plan only a cell whose dry run estimates more hours than this here (default 3)")
    parser.add_argument("--timeout", type=float, help="seconds per run (default: max(30 min, 3 x the estimate))")
    parser.add_argument("--threads", type=int, default=1, help="OMP/MKL/OpenBLAS (and so torch) threads per run")
    parser.add_argument("--embedder", help="--embedder for dq and SHED (default theirs: all-MiniLM-L6-v2); "
                                           "hashed-ngrams for a model-free try")
    parser.add_argument("--flags", action="append", default=[], metavar="METHOD='FLAGS'",
                        help="extra shedkit flags for one method (repeatable)")
    parser.add_argument("--extra", default="", help="extra shedkit flags for every method (as --extra='--flag value')")
    parser.add_argument("--gpu", default="H100-SXM", help="--dry-run-gpu (A100-80GB | H100-SXM | H200 | L4)")
    parser.add_argument("--seed", type=int, default=0, help="pool resampling and --seed of every run")
    parser.add_argument("--warm", action="store_true",
                        help="rerun cells on the cache their cold run left (cells *-warm)")
    parser.add_argument("--drop-caches", action="store_true", help="delete a cold cell's cache after it")
    parser.add_argument("--model-cache", default=None,
                        help="shared model cache linked as CACHE/models (default $SHEDKIT_CACHE or ~/.cache/shedkit, "
                             "its models/; 'none' to convert models in each cell, timed)")
    parser.add_argument("--lock", type=Path, help="hold this flock while a cell runs (e.g. /tmp/shedkit-heavy.lock)")
    parser.add_argument("--force", action="store_true", help="rerun finished cells")
    parser.add_argument("--table", action="store_true", help="only rebuild results.json / results.md from the cells")
    parser.add_argument("--suite", type=Path, default=SUITE, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.table:
        if not (args.out / "cells").is_dir():
            print(f"no cells in {args.out}")
            return 1
        print(markdown(write_tables(args.out)))
        return 0
    if not (args.suite / "pool.jsonl").is_file():
        print(f"skipped: no benchmark suite at {args.suite} (the public data lives in ../shared beside the checkout)")
        return 0
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}")
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    args.dry_run_only_cells = parse_cells(args.dry_run_only)
    if args.model_cache is None:
        from shedkit.pipeline.paths import default_cache_dir

        args.model_cache = default_cache_dir() / "models"
    args.model_cache = None if str(args.model_cache).lower() == "none" else Path(args.model_cache)
    args.out = args.out.resolve()
    (args.out / "cells").mkdir(parents=True, exist_ok=True)
    for n in sizes:
        for method in methods:
            path = args.out / "cells" / f"{cell_name(method, n, args.warm)}.json"
            if finished(path, method, n, args):
                print(f"{path.stem}: finished earlier (--force to redo)")
                continue
            with held(args.lock):
                print(f"[{time.strftime('%H:%M:%S')}] {path.stem}: load {os.getloadavg()[0]:.2f}", flush=True)
                cell = run_cell(method, n, args)
            write_atomic(path, json.dumps(cell, indent=1))
            est = cell.get("estimate") or {}
            print(f"[{time.strftime('%H:%M:%S')}] {path.stem}: {cell['status']}, wall {cell.get('wall_s')} s, "
                  f"peak RSS {cell.get('peak_rss_mb')} MB, estimated {fmt(est.get('seconds'))} s here, "
                  f"{fmt(est.get('gpu_seconds'))} s on {est.get('gpu')}", flush=True)
            if cell["status"] == "failed":
                why = cell.get("log_tail") or cell.get("error") or (cell.get("dry_run") or {}).get("log_tail")
                print((why or "")[-1500:])
    write_tables(args.out)
    print(f"wrote {args.out / 'results.md'} and results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
