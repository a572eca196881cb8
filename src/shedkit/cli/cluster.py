"""`shedkit cluster POOL --out DIR`: embed, k-means, one proxy per cluster (SHED step 1 alone)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from shedkit.cli.config import merge_config
from shedkit.cli.flags import CacheFlag, ConfigFlag, InputFlags, with_flags
from shedkit.pipeline.options import ClusteringOptions
from shedkit.util.defaults import DEFAULT_EMBEDDER


def cluster_command(
    ctx: typer.Context,
    pool: Path = typer.Argument(..., help="Pool file or saved HF dataset dir."),
    out: Path = typer.Option(Path("shedkit-clusters"), "--out", "-o", help="Output directory."),
    seed: int = typer.Option(0, "--seed", help="Seeds k-means++."),
    **flags: Any,
) -> None:
    """Cluster POOL; DIR gets scores.csv (row, id, cluster, is_proxy, cluster_size), the centers and manifest.json."""
    import sys
    import time

    import numpy as np
    from rich.console import Console

    from shedkit.cluster import cluster_records
    from shedkit.data import load_pool
    from shedkit.data.containers import atomic_write_json
    from shedkit.pipeline.paths import default_cache_dir
    from shedkit.report.manifest import environment
    from shedkit.report.scores import write_scores

    p = merge_config(ctx, dict(ctx.params), ctx.params["config"])
    start = time.perf_counter()
    records = load_pool(p["pool"], format=p["format"], fields=p["field"], dedup=p["dedup"], skip_empty=p["skip_empty"]).records
    result = cluster_records(
        records, n_clusters=p["clusters"], embedder=p["embedder"], cache_dir=p["cache_dir"] or default_cache_dir(),
        seed=p["seed"], backend=p["cluster_backend"], device=p["device"], max_iter=p["kmeans_iters"],
        batch_size=p["embed_batch_size"], include_system=bool(p.get("embed_system") or False),
    )
    out = Path(p["out"])
    ids = [r.id for r in records]
    result.save(out / "clusters", ids=ids, with_embeddings=False)
    sizes = np.bincount(result.labels, minlength=result.n_clusters)
    write_scores(out / "scores.csv", [r.index for r in records], ids, [False] * len(records), {
        "cluster": result.labels.tolist(), "is_proxy": result.is_proxy.tolist(),
        "cluster_size": sizes[result.labels].tolist(),
    })
    manifest = {
        "shedkit_command": ["shedkit", *sys.argv[1:]],
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in p.items()},
        "seed": p["seed"], "counts": {"records": len(records), "clusters": int(result.n_clusters)},
        "clustering": result.info, "timings": {"total": round(time.perf_counter() - start, 3)},
        "environment": environment(),
    }
    atomic_write_json(out / "manifest.json", manifest)
    Console(highlight=False).print(
        f"{len(records)} rows in {result.n_clusters} clusters (sizes {int(sizes.min())}-{int(sizes.max())}); "
        f"wrote {out / 'scores.csv'} and {out / 'clusters'}"
    )


def register(app: typer.Typer) -> None:
    command = with_flags(ClusteringOptions, ConfigFlag, InputFlags, CacheFlag,
                         defaults={"embedder": DEFAULT_EMBEDDER, "cluster_backend": "auto", "kmeans_iters": 50,
                                   "embed_batch_size": 64})(cluster_command)
    app.command("cluster", help="Embed and cluster a pool; one proxy per cluster.")(command)
