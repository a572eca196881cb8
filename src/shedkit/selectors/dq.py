"""Dataset Quantization (Zhou et al., ICCV 2023): GraphCut bins, then a uniform draw per bin.

Similarity s(i, j) = e_i . e_j of L2-normalised embeddings. The pool is split into B bins; each
bin is built greedily on the rows earlier bins left (its ground set G), adding at each step

    argmax_x  sum_{j in G} s(j, x)  -  2 sum_{s in bin} s(s, x)        (GraphCut, lambda = 1)

as magic-research/Dataset_Quantization does (``GraphCut`` + ``NaiveGreedy``: the first sum runs
over the whole ground set, the candidate and the bin's members included; ties go to the lower
index). Then n/B rows are drawn uniformly from each bin.

Where this differs from that code, on purpose:

* bin sizes: the first N mod B bins get N // B + 1 rows, the rest N // B, so the bins partition
  the pool (the reference makes B bins of N // B and never looks at the N mod B rows left over);
* per-bin quotas: n // B each, the remainder to the first bins, capped at a bin's size with the
  overflow handed on in bin order, so exactly n rows come back;
* the draw is seeded (``np.random.default_rng(seed)``), not numpy's global RNG.

Modes, so that memory stays bounded (``info["mode"]`` says which ran):

* ``exact``: the M x M similarity matrix is materialised (float32), as the reference does;
* ``blocked``: it never is. Column sums use sum_j s(j, x) = e_x . sum_j e_j; the greedy needs
  the similarity column of each new bin member, computed a block of K likely next picks at a
  time (the current top-K gains) with one matrix product; a pick outside the block triggers a
  new block. Same picks as ``exact`` (up to float rounding at exact ties), O(M d) memory;
* ``partitioned``: the pool is cut into k-means partitions (MiniBatchKMeans, seeded) of about
  ``partition_size`` rows; each partition is split into B bins by the greedy above (``exact`` or
  ``blocked`` by its size), and bin b of the pool is the union of the partitions' bins b. Cost
  grows linearly with N. With one partition it is ``exact``; with several, each bin is a
  GraphCut bin of each partition rather than of the pool (see ``graphcut_bins``).

No torch here.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import numpy as np

from shedkit.errors import ShedkitError
from shedkit.util.progress import progress_bar

Mode = Literal["auto", "exact", "blocked", "partitioned"]

EXACT_MAX = 10_000  # rows up to which the similarity matrix is materialised (400 MB float32)
PARTITION_ABOVE = 20_000  # rows above which "auto" partitions the pool (blocked at 30k: 28 s on
# hashed n-gram embeddings, 7 min on isotropic random ones, where every pick misses the cache)
PARTITION_SIZE = 5_000  # target rows per k-means partition
CACHE_COLUMNS = 256  # similarity columns computed per block in blocked mode


def l2_normalize(embeddings: np.ndarray) -> np.ndarray:
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] == 0:
        raise ShedkitError(f"DQ needs a non-empty (N, d) embedding array, got shape {emb.shape}")
    if not np.isfinite(emb).all():
        raise ShedkitError("DQ embeddings contain NaN or infinite values")
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.maximum(norms, 1e-12)


def bin_sizes(n_rows: int, bins: int) -> np.ndarray:
    """N // B rows per bin, one more for each of the first N mod B bins."""
    if bins < 1:
        raise ShedkitError(f"DQ needs at least one bin, got {bins}")
    base, extra = divmod(n_rows, bins)
    return np.array([base + (b < extra) for b in range(bins)], dtype=np.int64)


def sample_quotas(sizes: np.ndarray, n: int) -> np.ndarray:
    """Rows to draw per bin: n // B each, the remainder to the first bins, capped at the bin's size,
    and what a full bin cannot take handed to the next bins with room, in bin order."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if not 0 <= n <= sizes.sum():
        raise ShedkitError(f"cannot draw {n} rows from bins holding {int(sizes.sum())}")
    quotas = np.minimum(bin_sizes(n, len(sizes)), sizes)
    missing = n - int(quotas.sum())
    while missing > 0:
        for b in range(len(sizes)):
            if missing and quotas[b] < sizes[b]:
                quotas[b] += 1
                missing -= 1
    return quotas


# ------------------------------------------------------------------------------ greedy GraphCut


def greedy_graphcut(
    emb: np.ndarray,
    size: int,
    ground: np.ndarray | None = None,
    sim: np.ndarray | None = None,
    cache_columns: int = CACHE_COLUMNS,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedily pick ``size`` rows of ``ground`` (a boolean mask; all rows if None) by GraphCut gain.

    ``emb`` are L2-normalised rows (M, d). With ``sim`` (the M x M matrix emb @ emb.T) columns are
    read from it (exact mode); without, they are computed in blocks (blocked mode).
    Returns (picked positions in pick order, their gains when picked).
    """
    m = emb.shape[0]
    ground = np.ones(m, dtype=bool) if ground is None else np.asarray(ground, dtype=bool)
    if not 0 <= size <= int(ground.sum()):
        raise ShedkitError(f"cannot pick {size} rows from a ground set of {int(ground.sum())}")
    if sim is None:
        rows = np.flatnonzero(ground)
        picks, gains = _greedy_blocked(emb[rows], size, cache_columns)
        return rows[picks], gains
    gain = (ground.astype(np.float32) @ sim).astype(np.float64)  # sum_{j in G} s(j, x)
    gain[~ground] = -np.inf
    picks = np.empty(size, dtype=np.int64)
    gains = np.empty(size, dtype=np.float64)
    for t in range(size):
        x = int(np.argmax(gain))
        picks[t], gains[t] = x, gain[x]
        gain -= 2.0 * sim[x]
        gain[x] = -np.inf
    return picks, gains


def _greedy_blocked(emb: np.ndarray, size: int, cache_columns: int) -> tuple[np.ndarray, np.ndarray]:
    """The greedy on all rows of ``emb`` without the similarity matrix.

    sum_j s(j, x) = e_x . sum_j e_j. The similarity column of a pick comes from a cache of
    columns held for the current top gains; when a pick is not cached, the cache is refilled
    with the current top gains, computing (one matrix product) only the columns it lacks.
    Similarities never change, so cached columns never go stale. The refill size adapts
    between 8 and ``cache_columns``: halved when few cached columns were used before the next
    miss (gains reshuffle fast), doubled when most were.
    """
    m = emb.shape[0]
    k_max = max(1, min(cache_columns, m))
    k = k_max
    gain = (emb @ emb.sum(axis=0, dtype=np.float64).astype(np.float32)).astype(np.float64)
    cache = np.empty((k_max, m), dtype=np.float32)  # row s = similarities of column column_in[s]
    slot_of = np.full(m, -1, dtype=np.int64)
    column_in = np.full(k_max, -1, dtype=np.int64)
    picks = np.empty(size, dtype=np.int64)
    gains = np.empty(size, dtype=np.float64)
    hits = 0
    for t in range(size):
        x = int(np.argmax(gain))
        picks[t], gains[t] = x, gain[x]
        if slot_of[x] >= 0:
            hits += 1
        else:
            if t:  # adapt the refill size to how long the last one lasted
                k = max(min(8, k_max), k // 2) if hits < k // 8 else min(k_max, 2 * k) if hits >= k // 2 else k
            hits = 0
            top = np.argpartition(-gain, k - 1)[:k] if k < m else np.arange(m)
            wanted = np.zeros(m, dtype=bool)
            wanted[top] = True
            if not wanted[x]:  # more than k rows tie with the best gain: make sure x is cached
                wanted[top[0]], wanted[x], top[0] = False, True, x
            need = top[slot_of[top] < 0]
            free = np.flatnonzero((column_in < 0) | ~wanted[column_in])[: len(need)]
            slot_of[column_in[free][column_in[free] >= 0]] = -1
            cache[free] = emb[need] @ emb.T
            slot_of[need], column_in[free] = free, need
        gain -= 2.0 * cache[slot_of[x]]
        gain[x] = -np.inf
    return picks, gains


def _quantize(
    emb: np.ndarray, sizes: np.ndarray, exact: bool, cache_columns: int, advance: Callable[[int], None]
) -> np.ndarray:
    """Split rows of ``emb`` into len(sizes) bins built greedily in turn; return the bin of each row."""
    m = emb.shape[0]
    bin_of = np.full(m, -1, dtype=np.int64)
    sim = emb @ emb.T if exact else None
    remaining = np.ones(m, dtype=bool)
    for b, size in enumerate(sizes):
        if size == 0:
            continue
        if size == remaining.sum():  # the last bin takes what is left: the greedy has no choice
            picks = np.flatnonzero(remaining)
        else:
            picks, _ = greedy_graphcut(emb, int(size), remaining, sim, cache_columns)
        bin_of[picks] = b
        remaining[picks] = False
        advance(int(size))
    return bin_of


def kmeans_partitions(emb: np.ndarray, partition_size: int, seed: int | None = 0) -> list[np.ndarray]:
    """Cut rows into k-means partitions of about ``partition_size`` rows (none above twice that).

    A partition that comes out larger than 2 x ``partition_size`` is partitioned again; one that
    k-means cannot split (identical rows) is cut into consecutive runs. Partitions hold ascending
    row positions and are ordered by their first row.
    """
    n = emb.shape[0]
    n_parts = -(-n // partition_size)
    if n_parts <= 1:
        return [np.arange(n)]
    from sklearn.cluster import MiniBatchKMeans

    km = MiniBatchKMeans(n_clusters=n_parts, random_state=seed, n_init=1, batch_size=min(n, 4096))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate rows: fewer distinct points than clusters
        labels = km.fit_predict(emb)
    parts: list[np.ndarray] = []
    for c in range(n_parts):
        rows = np.flatnonzero(labels == c)
        if len(rows) == 0:
            continue
        if len(rows) <= 2 * partition_size:
            parts.append(rows)
        elif len(rows) < n:
            parts.extend(rows[sub] for sub in kmeans_partitions(emb[rows], partition_size, seed))
        else:
            parts.extend(np.array_split(rows, n_parts))
    parts.sort(key=lambda rows: rows[0])
    return parts


@dataclass
class GraphCutBins:
    bin_of: np.ndarray  # (N,) bin of each row, 0..B-1
    sizes: np.ndarray  # (B,) rows per bin
    mode: str  # "exact" | "blocked" | "partitioned"
    partition_of: np.ndarray | None = None  # (N,) partition of each row in partitioned mode
    info: dict[str, Any] = field(default_factory=dict)


def graphcut_bins(
    embeddings: np.ndarray,
    bins: int = 10,
    *,
    mode: Mode = "auto",
    exact_max: int = EXACT_MAX,
    partition_above: int = PARTITION_ABOVE,
    partition_size: int = PARTITION_SIZE,
    cache_columns: int = CACHE_COLUMNS,
    seed: int | None = 0,
    progress: bool = False,
) -> GraphCutBins:
    """Split the pool into ``bins`` GraphCut bins (see the module docstring for the modes).

    ``auto`` runs ``exact`` up to ``exact_max`` rows, ``blocked`` up to ``partition_above``, and
    ``partitioned`` above. Bin b holds N // B rows, plus one for b < N mod B, in every mode. In
    partitioned mode each partition contributes its own N_p // B rows to every bin, its N_p mod B
    extra rows going round-robin across partitions so that the pool's bin sizes stay as stated.
    """
    emb = l2_normalize(embeddings)
    n = emb.shape[0]
    if mode == "auto":
        mode = "exact" if n <= exact_max else "blocked" if n <= partition_above else "partitioned"
    if mode not in ("exact", "blocked", "partitioned"):
        raise ShedkitError(f"unknown DQ mode {mode!r}; use auto, exact, blocked or partitioned")
    if partition_size < 1:
        raise ShedkitError(f"DQ partition_size must be >= 1, got {partition_size}")
    sizes = bin_sizes(n, bins)

    with progress_bar(n, f"DQ bins ({mode})", enabled=progress, transient=True) as advance:
        if mode != "partitioned":
            bin_of = _quantize(emb, sizes, mode == "exact", cache_columns, advance)
            return GraphCutBins(bin_of, sizes, mode, info={"mode": mode, "bins": bins})

        parts = kmeans_partitions(emb, partition_size, seed)
        bin_of = np.full(n, -1, dtype=np.int64)
        partition_of = np.full(n, -1, dtype=np.int64)
        offset, inner = 0, {"exact": 0, "blocked": 0}
        for p, rows in enumerate(parts):
            base, extra = divmod(len(rows), bins)
            part_sizes = np.full(bins, base, dtype=np.int64)
            part_sizes[(offset + np.arange(extra)) % bins] += 1
            offset = (offset + extra) % bins
            exact = len(rows) <= exact_max
            inner["exact" if exact else "blocked"] += 1
            bin_of[rows] = _quantize(emb[rows], part_sizes, exact, cache_columns, advance)
            partition_of[rows] = p
    lengths = [len(r) for r in parts]
    info = {
        "mode": "partitioned",
        "bins": bins,
        "partitions": len(parts),
        "partition_rows_min": min(lengths),
        "partition_rows_max": max(lengths),
        "partition_modes": inner,
    }
    return GraphCutBins(bin_of, sizes, "partitioned", partition_of, info)



# ------------------------------------------------------------------------------------ selection


@dataclass
class DQSelection:
    selected: np.ndarray  # positions into the pool, ascending, exactly n
    bin_of: np.ndarray  # (N,) bin of each row
    quotas: np.ndarray  # (B,) rows drawn per bin
    info: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # seconds: bins, sample


def uniform_per_bin(bin_of: np.ndarray, quotas: np.ndarray, seed: int | None = 0) -> np.ndarray:
    """Draw quotas[b] rows uniformly without replacement from each bin b (seeded); ascending positions."""
    rng = np.random.default_rng(seed)
    picked = [
        rng.choice(np.flatnonzero(bin_of == b), size=int(q), replace=False) for b, q in enumerate(quotas) if q > 0
    ]
    return np.sort(np.concatenate(picked)) if picked else np.empty(0, dtype=np.int64)


def dq_select(
    embeddings: np.ndarray,
    n: int,
    bins: int = 10,
    *,
    seed: int | None = 0,
    mode: Mode = "auto",
    exact_max: int = EXACT_MAX,
    partition_above: int = PARTITION_ABOVE,
    partition_size: int = PARTITION_SIZE,
    cache_columns: int = CACHE_COLUMNS,
    progress: bool = False,
) -> DQSelection:
    """Select exactly n rows by Dataset Quantization: GraphCut bins, then a uniform draw per bin."""
    n_rows = len(embeddings)
    if not 1 <= n <= n_rows:
        raise ShedkitError(f"DQ budget must be between 1 and the pool size {n_rows}, got {n}")
    if bins > n_rows:
        raise ShedkitError(f"DQ asks for {bins} bins but the pool has only {n_rows} rows")
    clock = time.perf_counter()
    binned = graphcut_bins(
        embeddings,
        bins,
        mode=mode,
        exact_max=exact_max,
        partition_above=partition_above,
        partition_size=partition_size,
        cache_columns=cache_columns,
        seed=seed,
        progress=progress,
    )
    timings = {"bins": time.perf_counter() - clock}
    clock = time.perf_counter()
    quotas = sample_quotas(binned.sizes, n)
    selected = uniform_per_bin(binned.bin_of, quotas, seed)
    timings["sample"] = time.perf_counter() - clock
    info = dict(binned.info, bin_sizes=binned.sizes.tolist(), quotas=quotas.tolist(), seed=seed)
    return DQSelection(selected, binned.bin_of, quotas, info, timings)
