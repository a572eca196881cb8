"""Throughput of shedkit.embed.embed_records against a bare SentenceTransformer.encode.

Same model object, same texts (the first N rows of the noisy-mix-v1 pool), same batch size,
in one process. embed_records runs on a cold cache (its cache writes are included); the runs
are interleaved chunk by chunk (alternating which goes first) so drift on a shared machine
cancels out.
Goal: shedkit / bare throughput >= 0.9. A last line times a fully cached second call.

    HF_HUB_OFFLINE=1 PYTHONPATH=src .venv/bin/python bench/bench_embed.py [--n 2000] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

POOL = Path(__file__).resolve().parents[1].parent / "shared" / "bench" / "noisy-mix-v1" / "pool.jsonl"


def read_records(path: Path, n: int):
    from shedkit.data.records import Turn, make_record

    records = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if len(records) == n:
                break
            row = json.loads(line)
            prompt = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
            records.append(make_record(len(records), [Turn("user", prompt), Turn("assistant", row["output"])], row))
    return records


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=Path, default=POOL)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--chunk", type=int, default=250, help="texts per interleaved bare/shedkit pair")
    args = parser.parse_args(argv)
    if not args.pool.is_file():
        print(f"skipped: {args.pool} is absent (the benchmark pool lives in ../shared/bench)")
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from shedkit.embed import SentenceTransformerEmbedder, embed_records

    records = read_records(args.pool, args.n)
    texts = [r.text for r in records]
    emb = SentenceTransformerEmbedder(device=args.device)
    model = emb.load()
    model.encode(texts[:64], batch_size=args.batch_size)  # warm-up
    print(f"{len(texts)} texts, batch {args.batch_size}, device {args.device}, torch threads "
          f"{torch.get_num_threads()}, model from {emb.source}")

    def bare(chunk) -> float:
        t0 = time.perf_counter()
        model.encode([r.text for r in chunk], batch_size=args.batch_size, normalize_embeddings=True,
                     show_progress_bar=False)
        return time.perf_counter() - t0

    def shedkit(chunk, cache) -> float:
        t0 = time.perf_counter()
        embed_records(chunk, embedder=emb, cache_dir=cache, batch_size=args.batch_size, progress=True)
        return time.perf_counter() - t0

    # On a shared machine throughput drifts by tens of percent within minutes, so the texts are
    # split into chunks and each chunk is embedded by both, back to back, alternating which goes
    # first; every text is embedded once by each (shedkit on a cold cache, writes included).
    totals = {"bare": 0.0, "shedkit": 0.0}
    ratios = []
    with tempfile.TemporaryDirectory() as cache:
        for i, start in enumerate(range(0, len(records), args.chunk)):
            chunk = records[start : start + args.chunk]
            order = ("bare", "shedkit") if i % 2 == 0 else ("shedkit", "bare")
            seconds = {name: bare(chunk) if name == "bare" else shedkit(chunk, cache) for name in order}
            for name, sec in seconds.items():
                totals[name] += sec
            ratios.append(seconds["bare"] / seconds["shedkit"])
            print(f"  chunk {i}: {len(chunk)} texts  bare {seconds['bare']:6.2f} s  shedkit {seconds['shedkit']:6.2f} s  "
                  f"ratio {ratios[-1]:.3f}", flush=True)
    rate = {k: len(texts) / v for k, v in totals.items()}
    print(f"bare SentenceTransformer.encode: {rate['bare']:.1f} texts/s ({totals['bare']:.1f} s)")
    print(f"shedkit embed_records (cold):    {rate['shedkit']:.1f} texts/s ({totals['shedkit']:.1f} s)")
    print(f"ratio shedkit / bare: {rate['shedkit'] / rate['bare']:.3f} overall, median per chunk "
          f"{sorted(ratios)[len(ratios) // 2]:.3f} (goal >= 0.9)")

    with tempfile.TemporaryDirectory() as cache:
        embed_records(records, embedder=emb, cache_dir=cache, batch_size=args.batch_size, progress=False)
        t0 = time.perf_counter()
        embed_records(records, embedder=emb, cache_dir=cache, batch_size=args.batch_size, progress=False)
        print(f"shedkit embed_records, all cached: {time.perf_counter() - t0:.3f} s for {len(texts)} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
