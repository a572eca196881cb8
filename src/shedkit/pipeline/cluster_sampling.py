"""SHED steps 1 and 3 for the pipeline: cluster the pool (resumable), then sample by cluster value.

The SHED methods (``methods/shed.py``) call :func:`clustering_for`, values the proxies, turns the
proxy values into cluster values with :func:`values_by_cluster`, and finishes with
:func:`sampling_result`. :func:`run_from_values` is the whole method when the cluster values
come from a file (``--values FILE``: sampling without valuation).

Options read from ``ctx.options`` (None means the default):
``embedder`` ("all-MiniLM-L6-v2"), ``device`` (best available), ``clusters`` (round(sqrt(N))),
``cluster_backend`` ("auto"), ``kmeans_iters`` (50), ``embed_batch_size`` (64),
``temperature`` (QWCS τ; default from the values' spread), ``values`` (CSV path),
``progress`` (True).
"""

from __future__ import annotations

import time
from typing import Mapping

import numpy as np

from shedkit.cluster import ClusteringResult, cluster_records, resolve_backend
from shedkit.errors import ShedkitError
from shedkit.pipeline.methods.base import MethodContext, MethodResult
from shedkit.selectors.samplers import default_temperature, qocs_sample, qwcs_sample, read_cluster_values
from shedkit.util.defaults import DEFAULT_EMBEDDER

SAMPLERS = ("qocs", "qwcs")


def cluster_seed(ctx: MethodContext) -> int:
    """The k-means seed: ``--cluster-seed``, else ``--seed``."""
    given = ctx.option("cluster_seed")
    return int(ctx.seed if given is None else given)


def clustering_for(ctx: MethodContext, progress: bool | None = None) -> ClusteringResult:
    """Embed + k-means + proxies for ``ctx.records``, saved under ``run_dir/work/clusters``.

    A saved clustering with the same settings and the same pool is loaded instead of
    recomputed (embeddings are cached separately, under ``ctx.cache_dir``). ``progress``
    defaults to the ``progress`` option (True).
    """
    if progress is None:
        progress = bool(ctx.option("progress", True))
    from shedkit.embed import get_embedder

    embedder = get_embedder(ctx.option("embedder", DEFAULT_EMBEDDER), device=ctx.option("device"))
    settings = clustering_settings(ctx, embedder)
    saved = saved_clustering(ctx, settings)
    if saved is not None:
        return saved
    ids = [r.id for r in ctx.records]
    work = ctx.run_dir / "work" / "clusters"
    result = cluster_records(
        ctx.records, n_clusters=settings["clusters"], embedder=embedder, cache_dir=ctx.cache_dir,
        seed=settings["seed"], backend=settings["backend"], batch_size=int(ctx.option("embed_batch_size", 64)),
        max_iter=settings["max_iter"], progress=progress, include_system=bool(ctx.option("embed_system", False)),
    )
    result.info["settings"] = settings
    result.save(work, ids=ids, with_embeddings=False)
    return result


def clustering_settings(ctx: MethodContext, embedder) -> dict:
    """What a saved clustering must have been made with to be reused."""
    return {
        "embedder": embedder.identity,
        "clusters": ctx.option("clusters"),
        "backend": resolve_backend(ctx.option("cluster_backend", "auto")),
        "seed": cluster_seed(ctx),
        "max_iter": int(ctx.option("kmeans_iters", 50)),
        "embed_system": bool(ctx.option("embed_system", False)),  # system prompts in the embedded text
    }


def saved_clustering(ctx: MethodContext, settings: dict | None = None) -> ClusteringResult | None:
    """The clustering saved under ``run_dir/work/clusters`` for this pool with these settings
    (default: ``ctx``'s), or None."""
    if settings is None:
        from shedkit.embed import get_embedder

        settings = clustering_settings(ctx, get_embedder(ctx.option("embedder", DEFAULT_EMBEDDER),
                                                         device=ctx.option("device")))
    try:
        saved = ClusteringResult.load(ctx.run_dir / "work" / "clusters", ids=[r.id for r in ctx.records])
    except (ShedkitError, OSError, ValueError):
        return None  # nothing (valid) saved yet
    return saved if saved.info.get("settings") == settings else None


def values_by_cluster(clustering: ClusteringResult, records, proxy_values: Mapping[str, float]) -> dict[int, float]:
    """{cluster: its proxy's value} from values keyed by the proxies' record ids."""
    out = {}
    for cluster, row in enumerate(clustering.proxies.tolist()):
        rid = records[row].id
        if rid not in proxy_values:
            raise ShedkitError(f"no value for the proxy of cluster {cluster} (record {rid})")
        out[cluster] = float(proxy_values[rid])
    return out


def sampling_result(ctx: MethodContext, clustering: ClusteringResult, cluster_values: Mapping[int, float],
                    sampler: str) -> MethodResult:
    """Select ``ctx.budget`` rows with QOCS or QWCS; scores columns ``cluster``, ``is_proxy``, ``value``.

    ``value`` is each row's cluster value (its proxy's value). ``info`` records the sampler,
    the clustering and, for QWCS, the temperature used and where it came from.
    """
    if sampler not in SAMPLERS:
        raise ShedkitError(f"unknown sampler '{sampler}'; choose one of {', '.join(SAMPLERS)}")
    labels = clustering.labels
    _check_values_match(cluster_values, clustering.n_clusters)
    rng = np.random.default_rng(ctx.seed)
    info = {
        "sampler": sampler,
        "n_clusters": clustering.n_clusters,
        **{f"clustering_{k}": v for k, v in clustering.info.items() if k != "settings"},
    }
    t0 = time.perf_counter()
    try:
        if sampler == "qocs":
            selected = qocs_sample(labels, cluster_values, ctx.budget, rng)
        else:
            given = ctx.option("temperature")
            tau = default_temperature(list(cluster_values.values())) if given is None else float(given)
            info.update(temperature=tau, temperature_source="given" if given is not None else "std of cluster values")
            selected = qwcs_sample(labels, cluster_values, ctx.budget, rng, temperature=tau)
    except ValueError as exc:  # bad budget / temperature / values: the user's input
        raise ShedkitError(f"{sampler.upper()} sampling: {exc}") from exc
    value_of = np.array([cluster_values[c] for c in range(clustering.n_clusters)], dtype=np.float64)
    columns = {"cluster": labels.tolist(), "is_proxy": clustering.is_proxy.tolist(), "value": value_of[labels].tolist()}
    timings = {"sample": time.perf_counter() - t0}
    for stage in ("embed", "cluster"):
        if f"seconds_{stage}" in clustering.info:
            timings[stage] = float(clustering.info[f"seconds_{stage}"])
    return MethodResult(selected=selected, columns=columns, info=info, timings=timings)


def run_from_values(ctx: MethodContext, sampler: str) -> MethodResult:
    """SHED sampling with cluster values read from ``ctx.option("values")`` (a cluster,value CSV)."""
    path = ctx.option("values")
    if path is None:
        raise ShedkitError("sampling without valuation needs --values FILE (a CSV with columns cluster,value)")
    cluster_values = read_cluster_values(path)
    result = sampling_result(ctx, clustering_for(ctx), cluster_values, sampler)
    result.info["values_file"] = str(path)
    return result


def _check_values_match(cluster_values: Mapping[int, float], k: int) -> None:
    keys = set(cluster_values)
    if keys != set(range(k)):
        missing = sorted(set(range(k)) - keys)[:10]
        extra = sorted(keys - set(range(k)))[:10]
        raise ShedkitError(
            f"the cluster values do not match the {k} clusters of this pool"
            + (f"; missing clusters {missing}" if missing else "")
            + (f"; unknown clusters {extra}" if extra else "")
            + " (were they computed with the same --clusters, --embedder and --seed?)"
        )
