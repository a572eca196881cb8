"""Dry-run estimates of the stages around the language model (see ``pipeline/planning.py``):
loading the pool (measured), embedding it, k-means, DQ's GraphCut bins, DSIR's n-gram
weights, picking the rows and writing the outputs.

Embedding is timed on two of the run's batches (at least 64 rows) spread over the pool's
lengths and scaled by padded tokens (the embedder's own tokenizer, rows sorted by length into
batches as the run does); k-means, GraphCut and DSIR are timed on a sample (random unit
vectors of the embedding's dimension for the first two) and scaled by their cost model; picking
rows and writing the outputs are priced by a documented constant per row.
"""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

import numpy as np

from shedkit.pipeline.planning import GB, Planner, Stage, forward_flops, measured_peak_gb, number, timed
from shedkit.util.defaults import DEFAULT_EMBEDDER

#: picking rows (sorting scores, sampling, quotas): numpy over arrays of the pool's length
SELECT_SECONDS_PER_ROW = 1e-6
#: writing subset + scores.csv + manifest + report: 0.05 s for a 3,000-row demo pool with
#: --method random on a 2-core machine (timings write 0.032 s + report 0.014 s), rounded up
WRITE_SECONDS_PER_ROW = 2e-5
EMBED_SAMPLE = 64  # rows embedded to time an embedder: at least this many, and two of the run's batches
HASHED_SAMPLE = 256  # rows hashed to time the model-free embedder
KMEANS_SAMPLE = 2048  # random vectors clustered to time k-means
GRAPHCUT_SAMPLE = 1024  # random vectors binned to time GraphCut
DSIR_SAMPLE = 1024  # pool rows (and target rows per target) hashed to time DSIR


def load_pool_stage(p: Planner, seconds: float | None) -> Stage:
    n = len(p.ctx.records)
    return Stage("load_pool", "read and normalise the pool (done: this run loaded it)", f"{n:,} rows", {"rows": n},
                 seconds, "measured: this run's load" if seconds is not None else "not measured (an in-memory pool)",
                 p.baseline_gb, "measured: this process's resident peak after loading")


def select_stage(p: Planner, does: str, name: str = "select") -> Stage:
    n = len(p.ctx.records)
    return Stage(name, does, f"{n:,} rows -> {p.ctx.budget:,}", {"rows": n, "budget": p.ctx.budget},
                 SELECT_SECONDS_PER_ROW * n, f"constant: {SELECT_SECONDS_PER_ROW:g} s/row",
                 p.baseline_gb + n * 64 / GB, "derived: a few float64 arrays of the pool's length")


def write_stage(p: Planner) -> Stage:
    n = len(p.ctx.records)
    return Stage("write", "write the subset, scores.csv, manifest.json and report.html", f"{n:,} rows",
                 {"rows": n}, WRITE_SECONDS_PER_ROW * n,
                 f"constant: {WRITE_SECONDS_PER_ROW:g} s/row (a 3,000-row pool: 0.05 s on a 2-core machine)",
                 p.baseline_gb + n * 2048 / GB, "derived: the scores table, ~2 kB a row, on top of the process")


# -- embeddings -------------------------------------------------------------------------------

def _padded(lengths: Sequence[int], batch_size: int) -> float:
    """Tokens of the batches when rows go longest first, ``batch_size`` at a time, each batch
    padded to its longest row (as the embedders batch)."""
    order = sorted(lengths, reverse=True)
    return float(sum(order[i] * len(order[i: i + batch_size]) for i in range(0, len(order), batch_size)))


def embedding_info(p: Planner) -> dict[str, Any]:
    """The embedder, its dimension, and the rows whose vectors are not cached yet."""
    def look() -> dict[str, Any]:
        from shedkit.embed import get_embedder
        from shedkit.embed.cache import EmbeddingCache

        name = p.option("embedder", DEFAULT_EMBEDDER)
        embedder = get_embedder(name, device=p.option("device"))
        system = bool(p.option("embed_system", False))
        keys = [r.embedding_key(system) for r in p.ctx.records]
        cached = set(EmbeddingCache(p.ctx.cache_dir, embedder.identity).get(keys)) if p.ctx.cache_dir else set()
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        todo = [i for k, i in first.items() if k not in cached]
        return {"name": str(name), "embedder": embedder, "system": system, "todo": todo,
                "cached": len(first) - len(todo), "dim": getattr(embedder, "dim", None)}
    return p.once("embedding", look)


def embed_stage(p: Planner) -> Stage:
    info = embedding_info(p)
    if hasattr(info["embedder"], "load"):
        return _sentence_embed_stage(p, info)
    texts = [p.ctx.records[i].embedding_text(info["system"]) for i in info["todo"]]
    chars = np.array([len(t) for t in texts], dtype=float)
    sample = [texts[i] for i in np.argsort(chars, kind="stable")[:: max(1, len(texts) // HASHED_SAMPLE)]]
    if sample:
        info["embedder"].encode(sample[:2])
        seconds, reps = timed(lambda: info["embedder"].encode(sample))
    else:
        seconds, reps = 0.0, 0
    rate = seconds / max(sum(len(t) for t in sample), 1)
    n, dim = len(p.ctx.records), int(info["dim"] or 1024)
    return Stage("embed", f"embed the pool with {info['name']} (no model: hashed n-grams)",
                 f"{len(texts):,} rows, {number(chars.sum())} characters ({info['cached']:,} cached)",
                 {"rows": len(texts), "characters": float(chars.sum()), "cached_rows": info["cached"]},
                 rate * chars.sum(),
                 f"timed {len(sample)} rows ({reps} run(s), median {seconds:.3g} s): {rate:.3g} s/character x "
                 f"{number(chars.sum())} characters",
                 p.baseline_gb + n * dim * 4 / GB, f"derived: {n:,} rows x {dim} dims x 4 bytes on top of the process")


def _sentence_embed_stage(p: Planner, info: dict[str, Any]) -> Stage:
    records, todo, embedder = p.ctx.records, info["todo"], info["embedder"]
    batch = int(p.option("embed_batch_size", 64))
    start = time.perf_counter()
    st = embedder.load() if todo else None
    load_seconds = time.perf_counter() - start
    if st is None:
        return Stage("embed", f"embed the pool with {info['name']}", f"0 rows ({info['cached']:,} cached)",
                     {"rows": 0, "cached_rows": info["cached"]}, 0.0, "every row's vector is cached",
                     p.baseline_gb, "nothing loaded", flops=0.0)
    texts = [records[i].embedding_text(info["system"]) for i in todo]
    limit = int(st.max_seq_length or 512)
    tok = st.tokenizer
    lengths = []
    for i in range(0, len(texts), 1000):
        lengths += [min(len(x), limit) for x in tok(texts[i: i + 1000], add_special_tokens=True)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: (lengths[i], i))
    # timed at the run's batch size: per token, a CPU runs MiniLM ~18% faster in batches of 16
    # than of 64 (measured), so a sample timed in other batches mis-estimates the run
    size = max(EMBED_SAMPLE, 2 * batch)
    sample = sorted({order[min(len(order) - 1, int((j + 0.5) * len(order) / size))]
                     for j in range(min(size, len(order)))})
    sample_texts = [texts[i] for i in sample]
    embedder.encode(sample_texts[:2], batch_size=2)
    seconds, reps = timed(lambda: embedder.encode(sample_texts, batch_size=batch))
    sample_padded = _padded([lengths[i] for i in sample], batch)
    padded = _padded(lengths, batch)
    rate = seconds / max(sample_padded, 1.0)
    params = sum(t.numel() for t in st.parameters())
    dim = _st_dim(st)
    peak = measured_peak_gb()
    n = len(records)
    return Stage(
        "embed", f"embed the pool with {info['name']} ({number(params)} parameters)",
        f"{len(texts):,} rows, {number(padded)} padded tokens ({info['cached']:,} cached)",
        {"rows": len(texts), "padded_tokens": padded, "cached_rows": info["cached"]},
        load_seconds + rate * padded,
        f"measured load {load_seconds:.2f} s + timed {len(sample)} rows in batches of {batch} "
        f"({number(sample_padded)} padded tokens, {reps} run(s), median {seconds:.3g} s): {rate:.3g} s/token x "
        f"{number(padded)} padded tokens (the embedder's tokenizer, max {limit} tokens, batches of {batch})",
        max(peak, p.baseline_gb + params * 4 / GB + n * dim * 4 / GB),
        f"embedder weights {params * 4 / GB:.3f} GB + {n:,} x {dim} x 4-byte vectors; measured peak after the "
        f"sample {peak:.2f} GB",
        flops=forward_flops(params, padded))


# -- clustering -------------------------------------------------------------------------------

def kmeans_stage(p: Planner) -> Stage:
    from shedkit.cluster import resolve_backend
    from shedkit.cluster.kmeans import KMeans, default_num_clusters
    from shedkit.cluster.proxies import proxy_indices

    n, dim = len(p.ctx.records), embedding_dim(p)
    k = int(p.option("clusters") or default_num_clusters(n))
    backend = resolve_backend(p.option("cluster_backend", "auto"))
    iters = int(p.option("kmeans_iters", 50))
    m = min(n, KMEANS_SAMPLE)
    k_s = max(1, min(k, m // 8))
    x = _unit_vectors(m, dim)

    def fit() -> None:
        km = KMeans(k_s, seed=0, backend=backend, max_iter=iters).fit(x)
        proxy_indices(x, km.labels_, km.centers_)
    seconds, reps = timed(fit, min_seconds=0.5, max_reps=3)
    scale = (n * k) / (m * k_s)
    return Stage("kmeans", f"k-means ({backend}, {iters} iterations at most) into {k} clusters, one proxy each",
                 f"{n:,} rows x {k} clusters", {"rows": n, "clusters": k}, seconds * scale,
                 f"timed k-means of {m:,} random unit vectors (dim {dim}) into {k_s} clusters ({reps} run(s), median "
                 f"{seconds:.3g} s) x rows·clusters ({scale:.3g}x)",
                 p.baseline_gb + (2 * n * dim + min(n, 8192) * k) * 4 / GB,
                 f"derived: the {n:,} x {dim} vectors, a float32 copy, and distances of 8,192 rows to {k} centres")


def _st_dim(st) -> int:
    """A SentenceTransformer's vector size (sentence-transformers 6 renamed the method; the
    old name still works there, with a FutureWarning)."""
    get = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
    return int(get() or 384)


def embedding_dim(p: Planner) -> int:
    info = embedding_info(p)
    if info["dim"] is None:
        info["dim"] = _st_dim(info["embedder"].load())
    return int(info["dim"])


def _unit_vectors(m: int, dim: int) -> np.ndarray:
    x = np.random.default_rng(0).standard_normal((m, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def saved_clustering(p: Planner):
    """The clustering this run saved under ``work/clusters`` with the same settings, or None."""
    from shedkit.pipeline.cluster_sampling import saved_clustering as saved

    return p.once("saved-clustering", lambda: saved(p.ctx))


def clustering_stages(p: Planner) -> tuple[list[Stage], list[int], str]:
    """Embed + k-means (or the saved clustering), and the proxies SHED would value: the saved
    clustering's, else stand-ins (a seeded sample of as many rows as there will be clusters)."""
    from shedkit.cluster.kmeans import default_num_clusters
    from shedkit.pipeline.cluster_sampling import cluster_seed

    saved = saved_clustering(p)
    if saved is not None:
        n = len(p.ctx.records)
        loaded = [Stage(name, f"{what}: loaded from this run's work/clusters", "0 rows (saved)", {"rows": 0},
                        0.0, "saved by an earlier run with the same settings", p.baseline_gb, "nothing computed")
                  for name, what in (("embed", "embeddings"), ("kmeans", "k-means"))]
        return loaded, saved.proxies.tolist(), f"the saved clustering's proxies ({n:,} rows)"
    stages = [embed_stage(p), kmeans_stage(p)]
    n = len(p.ctx.records)
    k = int(p.option("clusters") or default_num_clusters(n))
    from shedkit.models.encode import has_empty_response

    usable = [i for i, r in enumerate(p.ctx.records) if not has_empty_response(r)] or list(range(n))
    rng = np.random.default_rng([cluster_seed(p.ctx), 7])
    proxies = sorted(rng.choice(usable, size=min(k, len(usable)), replace=False).tolist())
    return stages, proxies, "stand-ins: a seeded sample of pool rows, the real proxies need the clustering"


def graphcut_stage(p: Planner, bins: int, mode: str, exact_max: int, partition_above: int,
                   partition_size: int) -> Stage:
    from shedkit.selectors.dq import graphcut_bins

    n, dim = len(p.ctx.records), embedding_dim(p)
    if mode == "auto":
        mode = "exact" if n <= exact_max else "blocked" if n <= partition_above else "partitioned"
    m = max(bins, min(n, GRAPHCUT_SAMPLE))
    x = _unit_vectors(m, dim)
    seconds, reps = timed(lambda: graphcut_bins(x, bins, mode="exact"), min_seconds=0.5, max_reps=3)
    if mode == "partitioned":
        parts = math.ceil(n / partition_size)
        size = min(n, partition_size)
        scale, memory = parts * (size / m) ** 2, size * size * 4
        how = f"{parts} partitions of ~{size:,} rows: partitions x (rows/{m})²"
    else:
        scale, memory = (n / m) ** 2, (n * n * 4 if mode == "exact" else n * (dim + 256) * 4)
        how = "(rows/sample)²" + ("; blocked mode assumed as fast as exact (slower on isotropic vectors)"
                                  if mode == "blocked" else "")
    return Stage("graphcut_bins", f"DQ: {bins} GraphCut bins ({mode})", f"{n:,} rows, {bins} bins",
                 {"rows": n, "bins": bins}, seconds * scale,
                 f"timed exact GraphCut of {m:,} random unit vectors (dim {dim}; {reps} run(s), median "
                 f"{seconds:.3g} s) "
                 f"x {scale:.3g} ({how})",
                 p.baseline_gb + (memory + n * dim * 4) / GB,
                 f"derived: {'the similarity matrix' if mode != 'blocked' else 'blocked columns'} "
                 f"({memory / GB:.3f} GB) + the vectors")


# -- DSIR -------------------------------------------------------------------------------------

def dsir_stage(p: Planner, pool_texts: Sequence[str], targets: Sequence[Sequence[str]], settings: dict) -> Stage:
    """DSIR's hashed n-grams: the targets' and the pool's counts, then the pool's weights (the
    pool is hashed twice); timed on up to ``DSIR_SAMPLE`` rows of each, scaled by characters."""
    from shedkit.selectors.dsir import dsir_select

    pool_chars = np.array([len(t) for t in pool_texts], dtype=float)
    step = max(1, len(pool_texts) // DSIR_SAMPLE)
    sample = [pool_texts[i] for i in np.argsort(pool_chars, kind="stable")[::step]]
    target_sample = [list(t[:DSIR_SAMPLE]) for t in targets]
    seconds, reps = timed(lambda: dsir_select(sample, target_sample, 1, progress=False, **settings),
                          min_seconds=0.5, max_reps=3)
    t_chars = float(sum(len(x) for t in targets for x in t))
    t_sample = float(sum(len(x) for t in target_sample for x in t))
    work, sample_work = 2 * pool_chars.sum() + t_chars, 2 * sum(len(x) for x in sample) + t_sample
    scale = work / max(sample_work, 1.0)
    n, buckets = len(pool_texts), int(settings.get("num_buckets", 10_000))
    return Stage("dsir_weights", f"DSIR: hashed n-gram counts of {len(targets)} target(s) and the pool, "
                                 "the pool's importance weights, the resampling",
                 f"{n:,} rows, {number(pool_chars.sum())} characters (+{number(t_chars)} in targets)",
                 {"rows": n, "characters": float(pool_chars.sum()), "target_characters": t_chars},
                 seconds * scale,
                 f"timed DSIR on {len(sample):,} pool rows and {sum(map(len, target_sample)):,} target rows "
                 f"({reps} run(s), median {seconds:.3g} s) x characters hashed (pool twice + targets: {scale:.3g}x)",
                 p.baseline_gb + (n * (len(targets) + 2) * 8 + (len(targets) + 2) * buckets * 8) / GB,
                 "derived: weights per row and target, bucket counts per target")
