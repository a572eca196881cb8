"""k-means + proxies: wall time and peak memory, faiss vs scikit-learn.

Datasets: 100,000 x 384 standard-normal float32 vectors (seeded), and the MiniLM embeddings of
the 3,000-row noisy-mix-v1 pool (embedded once through the shedkit cache). Each (dataset,
backend) runs in its own subprocess, which reports the fit and proxy wall times and its peak
resident memory (VmHWM, or getrusage ru_maxrss off Linux: counts faiss's and BLAS's native
allocations, which tracemalloc cannot see), before and after clustering.

    HF_HUB_OFFLINE=1 PYTHONPATH=src .venv/bin/python bench/bench_kmeans.py [--k-random 300] [--k-pool 0=sqrt(N)]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shedkit.util.memory import peak_rss_mb

POOL = Path(__file__).resolve().parents[1].parent / "shared" / "bench" / "noisy-mix-v1" / "pool.jsonl"


def child(data: str, backend: str, k: int, max_iter: int, seed: int) -> dict:
    import numpy as np

    from shedkit.cluster import KMeans, default_num_clusters, proxy_indices

    if data == "random":
        X = np.random.default_rng(seed).standard_normal((100_000, 384), dtype=np.float32)
    else:
        X = np.load(data, allow_pickle=False)
    k = k or default_num_clusters(len(X))
    rss0 = peak_rss_mb()
    t0 = time.perf_counter()
    km = KMeans(k, seed=seed, backend=backend, max_iter=max_iter).fit(X)
    t1 = time.perf_counter()
    proxies = proxy_indices(X, km.labels_, km.centers_)
    t2 = time.perf_counter()
    rss1 = peak_rss_mb()
    return {
        "rows": len(X), "dim": X.shape[1], "k": int(k), "clusters": int(km.n_clusters_), "backend": km.backend_,
        "fit_s": t1 - t0, "proxies_s": t2 - t1, "inertia": km.inertia_, "n_proxies": len(proxies),
        "peak_rss_mb": rss1, "rss_before_mb": rss0,
    }


def pool_embeddings(path: Path, out: Path) -> Path | None:
    if not path.is_file():
        print(f"skipped the pool: {path} is absent")
        return None
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import numpy as np

    from bench_embed import read_records

    from shedkit.embed import embed_records

    cache = Path(os.environ.get("SHEDKIT_CACHE", Path.home() / ".cache" / "shedkit"))
    t0 = time.perf_counter()
    X = embed_records(read_records(path, 10**9), cache_dir=cache, device="cpu", progress=True)
    print(f"pool embeddings {X.shape} in {time.perf_counter() - t0:.1f} s (cache {cache})")
    np.save(out, X, allow_pickle=False)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k-random", type=int, default=300, help="K for the 100k random vectors")
    parser.add_argument("--k-pool", type=int, default=0, help="K for the pool (0: round(sqrt(N)) = 55)")
    parser.add_argument("--max-iter", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backends", default="faiss,sklearn")
    parser.add_argument("--skip-random", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("DATA", "BACKEND"), help=argparse.SUPPRESS)
    parser.add_argument("--k", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.k, args.max_iter, args.seed)))
        return 0

    print(f"cpu cores: {os.cpu_count()}, max_iter {args.max_iter}, seed {args.seed}")
    with tempfile.TemporaryDirectory() as tmp:
        datasets = [] if args.skip_random else [("random 100000x384", "random", args.k_random)]
        pool = pool_embeddings(POOL, Path(tmp) / "pool.npy")
        if pool is not None:
            datasets.append(("noisy-mix-v1 pool MiniLM", str(pool), args.k_pool))
        for label, data, k in datasets:
            for backend in args.backends.split(","):
                cmd = [sys.executable, __file__, "--child", data, backend, "--k", str(k),
                       "--max-iter", str(args.max_iter), "--seed", str(args.seed)]
                t0 = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    print(f"{label} / {backend}: failed\n{proc.stderr[-2000:]}")
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                print(f"{label:26s} {backend:8s} K={r['k']:<4d} fit {r['fit_s']:7.2f} s  proxies {r['proxies_s']:5.2f} s  "
                      f"peak RSS {r['peak_rss_mb']:7.0f} MB (before fit {r['rss_before_mb']:6.0f} MB)  "
                      f"inertia {r['inertia']:.4g}  [process {time.perf_counter() - t0:.1f} s]", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
