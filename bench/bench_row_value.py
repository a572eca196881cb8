"""Row-level selection on noisy-mix-v1 (issue 10, "Measure"): corrupted share by kind, GSM8K
share and selection wall time of first-order, shed-hybrid (each row score), lowest-loss, ifd,
next to random and SHED (cluster values from first-order sums, optionally proxy Shapley).

Each method's result is written to OUT/results/<name>.json as soon as it finishes, and every
model computation is cached under OUT/cache, so the benchmark runs in pieces (``--only``) and a
rerun skips what is done. ``--table`` prints the markdown table from what is there.

    flock /tmp/shedkit-heavy.lock .venv/bin/python bench/bench_row_value.py --out DIR --only first-order
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from shedkit.util.memory import peak_rss_mb

SUITE = Path(__file__).resolve().parents[1] / ".." / "shared" / "bench" / "noisy-mix-v1"
KINDS = ("truncated", "misaligned", "boilerplate", "wrong_answer")


def methods(args) -> dict[str, dict]:
    fo = dict(fo_layers=args.fo_layers, fo_checkpoints=args.fo_checkpoints, fo_warmup=args.fo_warmup,
              max_length=args.max_length, epochs=args.warmup_epochs, batch_size=8)
    shed_fo = dict(clusters=args.clusters, cluster_value="first-order", **fo)
    out = {
        "random": dict(method="random"),
        "first-order-raw": dict(method="first-order", **fo),
        "first-order-cosine": dict(method="first-order", fo_normalize="cosine", **fo),
        # issue 23: Adam-preconditioned, centred on the pool's mean update, cosine (LESS and beyond)
        "first-order-less": dict(method="first-order", fo_normalize="less", **fo),
        "first-order-less-uncentred": dict(method="first-order", fo_normalize="less", fo_center=False, **fo),
        "lowest-loss": dict(method="lowest-loss", max_length=args.max_length),
        "ifd-low": dict(method="ifd", max_length=args.max_length),
        "ifd-high-drop-ge1": dict(method="ifd", ifd_order="high", ifd_drop_ge1=True, max_length=args.max_length),
        "shed-qocs-fo-sum": dict(method="shed-qocs", **shed_fo),
        "shed-qwcs-fo-sum": dict(method="shed-qwcs", **shed_fo),
    }
    for sampler in ("qocs", "qwcs"):
        for score in ("random", "first-order", "ifd", "loss"):
            out[f"hybrid-{sampler}-{score}"] = dict(method="shed-hybrid", sampler=sampler, row_score=score, **shed_fo)
        out[f"hybrid-{sampler}-first-order-cosine"] = dict(method="shed-hybrid", sampler=sampler,
                                                            row_score="first-order", fo_normalize="cosine", **shed_fo)
    out["hybrid-qocs-first-order-keep0.5"] = dict(method="shed-hybrid", sampler="qocs", row_score="first-order",
                                                  row_keep=0.5, **shed_fo)
    out["hybrid-qocs-ifd-keep0.5"] = dict(method="shed-hybrid", sampler="qocs", row_score="ifd", row_keep=0.5, **shed_fo)
    return out


def shares(rows: list[int], labels: list[dict]) -> dict:
    picked = [labels[i] for i in rows]
    n = len(picked)
    out = {"n": n, "corrupted": sum(p["label"] != "clean" for p in picked) / n,
           "gsm8k": sum(p["source"] == "gsm8k" for p in picked) / n}
    out.update({k: sum(p["label"] == k for p in picked) / n for k in KINDS})
    return out


def make_subset(suite: Path, dest: Path, every: int) -> Path:
    """Every ``every``-th row of the pool (and its labels, re-numbered); targets linked."""
    dest.mkdir(parents=True, exist_ok=True)
    pool = (suite / "pool.jsonl").read_text().splitlines(keepends=True)
    labels = (suite / "pool_labels.jsonl").read_text().splitlines()
    keep = list(range(0, len(pool), every))
    (dest / "pool.jsonl").write_text("".join(pool[i] for i in keep))
    rows = []
    for new, i in enumerate(keep):
        label = json.loads(labels[i])
        rows.append(json.dumps({**label, "line": new, "pool_line": i}) + "\n")
    (dest / "pool_labels.jsonl").write_text("".join(rows))
    for target in suite.glob("target_*.jsonl"):
        link = dest / target.name
        if not link.exists():
            link.symlink_to(target.resolve())
    return dest


def run_one(name: str, spec: dict, args, labels) -> dict:
    import shedkit

    target = Path(args.suite) / args.target
    t0 = time.perf_counter()
    sel = shedkit.select(Path(args.suite) / "pool.jsonl", budget=args.budget, seed=args.seed, out=Path(args.out) / "runs" / name,
                         cache_dir=Path(args.out) / "cache", skip_empty=True, target=[target], model=args.model,
                         progress=not args.no_progress, **{k: v for k, v in spec.items() if v is not None})
    wall = time.perf_counter() - t0
    manifest = json.loads((Path(args.out) / "runs" / name / "manifest.json").read_text())
    res = {"name": name, "spec": spec, "wall_s": wall, "method_timings": manifest["method_timings"],
           # VmHWM of this process: the peak of every method run so far in it (run one per process
           # with --only for a per-method figure)
           "peak_rss_mb_process": peak_rss_mb(), **shares(sel.rows, labels)}
    info = manifest["method"]
    fo = info.get("first_order", info if info.get("valuation") == "first-order" else None)
    if fo:
        res["first_order"] = {k: fo.get(k) for k in ("row_gradients_computed", "row_gradients_cached", "warmup", "timings")}
    return res


# first-order runs and their value columns in scores.csv
VALUE_COLUMNS = {"first-order-raw": ("first_order_raw", "first_order_cosine"),
                 "first-order-less": ("first_order_less",),
                 "first-order-less-uncentred": ("first_order_less",)}


def length_bias(out: Path, labels: list[dict] | None = None) -> dict:
    """Spearman of each first-order value column with the row's response length (issue 23's
    bias check: |rho| < 0.2), and the corrupted share by kind of the top 10% by that value."""
    import csv

    from scipy.stats import spearmanr

    res: dict = {}
    for run, columns in VALUE_COLUMNS.items():
        path = out / "runs" / run / "scores.csv"
        if not path.exists():
            continue
        rows = list(csv.DictReader(open(path)))
        tok = np.array([float(r["response_tokens"] or "nan") for r in rows])
        for col in columns:
            if col not in rows[0]:
                continue
            val = np.array([float(r[col] or "nan") for r in rows])
            ok = np.isfinite(tok) & np.isfinite(val)
            entry = {"rows": int(ok.sum()), "spearman_vs_response_tokens": float(spearmanr(val[ok], tok[ok])[0])}
            if labels is not None:
                idx = np.flatnonzero(ok)
                top = idx[np.argsort(-val[ok], kind="stable")[: max(1, len(idx) // 10)]]
                lines = [int(rows[i]["row"]) for i in top] if "row" in rows[0] else top.tolist()
                entry["top10pct"] = shares(lines, labels)
            res[f"{run}:{col}"] = entry
    return res


def table(out: Path) -> str:
    results = [json.loads(p.read_text()) for p in sorted((out / "results").glob("*.json"))]
    lines = ["| method | corrupted | truncated | misaligned | boilerplate | wrong_answer | GSM8K | wall s (this run) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: r["corrupted"]):
        lines.append(f"| {r['name']} | {100 * r['corrupted']:.1f}% | " + " | ".join(f"{100 * r[k]:.1f}%" for k in KINDS)
                     + f" | {100 * r['gsm8k']:.1f}% | {r['wall_s']:.0f} |")
    return "\n".join(lines)


def machine() -> dict:
    """The bench's machine record (CPU model, fast bf16, cores, torch threads, load) and the git
    commit: ``shedkit.evaluate.bench.machine`` + ``shedkit.report.manifest.git_hash``."""
    from shedkit.evaluate.bench import machine as bench_machine
    from shedkit.report.manifest import git_hash

    return {**bench_machine(), "git": git_hash()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--suite", default=str(SUITE))
    p.add_argument("--target", default="target_alpaca_dev.jsonl")
    p.add_argument("--out", required=True)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--budget", default="0.1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clusters", type=int, default=30)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--fo-layers", type=int, default=4)
    p.add_argument("--fo-checkpoints", type=int, default=2)
    p.add_argument("--fo-warmup", type=float, default=0.05)
    p.add_argument("--warmup-epochs", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--subset-every", type=int, default=1,
                   help="use every K-th pool row only (a smaller pool with the same mix, for a loaded machine)")
    p.add_argument("--only", default=None, help="comma-separated method names (default: all)")
    p.add_argument("--table", action="store_true", help="only print the table of finished results")
    p.add_argument("--timing", action="store_true", help="only time the forward and gradient passes on 64 rows")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.table:
        print(table(out))
        suite = out / "suite" if (out / "suite" / "pool_labels.jsonl").exists() else Path(args.suite)
        labels = [json.loads(x) for x in open(suite / "pool_labels.jsonl")]
        print(json.dumps(length_bias(out, labels), indent=1))
        return 0
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.subset_every > 1:
        args.suite = str(make_subset(Path(args.suite), out / "suite", args.subset_every))
    if args.timing:
        res = timing(args)
        (out / "timing.json").write_text(json.dumps(res, indent=1))
        print(json.dumps(res, indent=1))
        return 0
    labels = [json.loads(x) for x in open(Path(args.suite) / "pool_labels.jsonl")]
    # the pool has one row with an empty response (skipped): map selected input rows to labels by line
    all_methods = methods(args)
    names = args.only.split(",") if args.only else list(all_methods)
    (out / "results").mkdir(parents=True, exist_ok=True)
    for name in names:
        dest = out / "results" / f"{name}.json"
        if dest.exists():
            print(f"{name}: done already", flush=True)
            continue
        res = run_one(name, all_methods[name], args, labels)
        res["machine"] = machine()
        res["command"] = [sys.executable, *sys.argv]
        dest.write_text(json.dumps(res, indent=1))
        print(f"{name}: corrupted {100 * res['corrupted']:.1f}% gsm8k {100 * res['gsm8k']:.1f}% wall {res['wall_s']:.0f}s", flush=True)
    print(table(out))
    return 0



def timing(args, n_rows: int = 64) -> dict:
    """Rows/s of a plain forward pass and of the first-order gradient pass (1 and 2
    checkpoints; LoRA on the last 2, 4 or all layers) on ``n_rows`` pool rows of mixed length."""
    import copy

    import torch

    from shedkit.data.pool import load_pool
    from shedkit.models.config import TrainConfig
    from shedkit.models.encode import encode_record
    from shedkit.models.gradients import attach_lora, checkpoint_gradient_stats, dev_gradient, lora_state
    from shedkit.models.loading import shared_model
    from shedkit.models.scoring import pad_id_of, token_logprobs

    records = load_pool(Path(args.suite) / "pool.jsonl", skip_empty=True).records
    rows = records[:: max(1, len(records) // n_rows)][:n_rows]
    base, tok = shared_model(args.model)
    pad = pad_id_of(tok)
    seqs = [encode_record(tok, r, args.max_length, "auto") for r in rows]
    out = {"rows": len(rows), "tokens": int(sum(len(s) for s in seqs)), "max_length": args.max_length}
    t0 = time.perf_counter()
    token_logprobs(base, seqs, pad, batch_size=8, precision="auto")
    out["forward_rows_per_s"] = len(rows) / (time.perf_counter() - t0)
    for layers in (2, 4, None):
        model = attach_lora(copy.deepcopy(base), TrainConfig(max_length=args.max_length), layers)
        state = lora_state(model)
        dev = dev_gradient(model, seqs[:8], pad)
        for n_ck in (1, 2):
            t0 = time.perf_counter()
            checkpoint_gradient_stats(model, seqs, [(state, dev)] * n_ck, pad, "auto", batch_size=8)
            out[f"gradients_rows_per_s_layers{layers or 'all'}_ckpt{n_ck}"] = len(rows) / (time.perf_counter() - t0)
        del model
    out["machine"] = machine()
    return out


if __name__ == "__main__":
    raise SystemExit(main())
