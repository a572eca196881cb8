"""Resident memory over a long run of fine-tunes and scoring passes (issue 23, "Memory"), old way
against new, side by side: each variant runs in its own fresh process, one after the other.

* ``old``: every batch padded to its own longest row, freed memory left to glibc (the code before
  MODEL_LAYER_VERSION 2);
* ``new``: CPU batches padded to bucketed widths (``scoring.padded_width``) and
  ``release_memory()`` (gc + ``malloc_trim``) after each fine-tune and scoring pass.

A round = LoRA fine-tune of SmolLM2-135M on ``--train-rows`` real pool rows (batch 8,
max_length 256, bf16 autocast where the CPU has it) + loss scoring of ``--score-rows`` other
rows. After each round: VmRSS, VmHWM and the round's seconds. Rows come from the noisy-mix-v1
pool (``../shared``), a different slice each round, so lengths vary as in a real run.

    PYTHONPATH=src .venv/bin/python bench/bench_memory.py --out bench/results/row-value/memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SUITE = Path(__file__).resolve().parents[1] / ".." / "shared" / "bench" / "noisy-mix-v1"
VARIANTS = ("old", "new")


def status_mb() -> dict:
    from shedkit.util.memory import peak_rss_mb, resident_mb

    return {"VmRSS": int(resident_mb()), "VmHWM": int(peak_rss_mb())}


def child(variant: str, rounds: int, train_rows: int, score_rows: int, precision: str) -> list[dict]:
    import torch

    torch.set_num_threads(1)
    from shedkit.data.pool import load_pool
    from shedkit.models import finetune as ft_mod
    from shedkit.models import gradients as grad_mod
    from shedkit.models import scoring
    from shedkit.models.config import TrainConfig
    from shedkit.models.encode import encode_record
    from shedkit.models.finetune import finetuned
    from shedkit.models.loading import shared_model

    if variant == "old":
        scoring.PAD_TO_BUCKETS = False
        for mod in (ft_mod, grad_mod, scoring):
            mod.release_memory = lambda: False
    records = load_pool(SUITE / "pool.jsonl", skip_empty=True).records
    base, tok = shared_model("smollm2-135m")
    pad = scoring.pad_id_of(tok)
    config = TrainConfig(max_length=256, batch_size=8, epochs=1, lr=1e-3, precision=precision)
    out = [{"round": 0, **status_mb(), "seconds": 0.0}]
    per = train_rows + score_rows
    for r in range(rounds):
        chunk = records[r * per:(r + 1) * per]
        t0 = time.perf_counter()
        with finetuned(base, tok, chunk[:train_rows], config, seed=r) as res:
            seqs = [encode_record(tok, x, 256) for x in chunk[train_rows:]]
            scoring.token_logprobs(res.model, seqs, pad, batch_size=8, precision=precision)
        out.append({"round": r + 1, **status_mb(), "seconds": round(time.perf_counter() - t0, 2)})
        print(json.dumps({"variant": variant, **out[-1]}), flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", required=True, help="JSON file for the results")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--train-rows", type=int, default=32)
    p.add_argument("--score-rows", type=int, default=48)
    p.add_argument("--precision", default="auto")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not (SUITE / "pool.jsonl").exists():
        print(f"skipped: no noisy-mix-v1 suite at {SUITE.resolve()} (../shared is absent)")
        return 0
    if args.child:
        res = child(args.child, args.rounds, args.train_rows, args.score_rows, args.precision)
        Path(args.out).write_text(json.dumps(res))
        return 0
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    results = {}
    for variant in args.variants.split(","):
        part = Path(args.out).with_suffix(f".{variant}.part.json")
        cmd = [sys.executable, __file__, "--child", variant, "--out", str(part), "--rounds", str(args.rounds),
               "--train-rows", str(args.train_rows), "--score-rows", str(args.score_rows), "--precision", args.precision]
        load0 = os.getloadavg()[0]
        subprocess.run(cmd, check=True)
        results[variant] = {"rounds": json.loads(part.read_text()), "load_start": load0, "load_end": os.getloadavg()[0]}
        part.unlink()
    from shedkit.evaluate.bench import machine
    from shedkit.report.manifest import git_hash

    doc = {"command": [sys.executable, *sys.argv], "git": git_hash(), "machine": machine(),
           "settings": vars(args), "variants": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1))
    for v, r in results.items():
        rss = [x["VmRSS"] for x in r["rounds"]]
        print(f"{v}: RSS after each round {rss} MB, peak {r['rounds'][-1]['VmHWM']} MB, "
              f"seconds {sum(x['seconds'] for x in r['rounds']):.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
