"""SHED's value-guided cluster samplers (QOCS, QWCS) and top-k on any per-row score.

Pure numpy; never imports torch. Every sampler returns an int64 array of exactly ``n``
distinct row positions, in the order they were chosen (sort it for input order), and takes
its randomness only from ``rng`` (a ``numpy.random.Generator`` or an int seed).

Cluster values are given per cluster id, as a mapping ``{cluster: value}`` or a sequence
indexed by cluster id; every cluster that has rows needs a finite value.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from shedkit.errors import InputError

#: temperature used when every cluster has the same value (then any temperature is uniform)
FLAT_TEMPERATURE = 1.0


def qocs_sample(labels, cluster_values, n: int, rng, member_order=None) -> np.ndarray:
    """Quality-Ordered Cluster Sampling: whole clusters in decreasing value until ``n`` rows.

    Clusters are ranked by value, highest first, equal values by lower cluster id. Each is
    taken whole while it fits; the first one that does not fit is sampled down uniformly (with
    ``rng``) to fill exactly ``n``. Whole clusters' rows come in ascending row order.

    member_order -- optional ``rows -> rows`` (a cluster's eligible rows, best first; it may
                    drop rows): a cluster then contributes its eligible rows, and the one that
                    does not fit its first ones (no randomness). A cluster with fewer eligible
                    rows than it would get passes the rest on to the next cluster.
    """
    labels, clusters, values = _validate(labels, cluster_values, n)
    rng = np.random.default_rng(rng)
    order = np.lexsort((clusters, -values))  # value descending, then cluster id ascending
    members = _members_by_cluster(labels, clusters)
    if member_order is not None:
        members = [np.asarray(member_order(rows), dtype=np.int64) for rows in members]
        _check_enough(members, n)
    chosen: list[np.ndarray] = []
    remaining = n
    for c in order:
        if remaining == 0:
            break
        rows = members[c]
        if len(rows) <= remaining:
            chosen.append(rows)
            remaining -= len(rows)
        else:
            chosen.append(rows[:remaining] if member_order is not None else rng.choice(rows, size=remaining, replace=False))
            remaining = 0
    return np.concatenate(chosen).astype(np.int64) if chosen else np.empty(0, dtype=np.int64)


def qwcs_sample(labels, cluster_values, n: int, rng, temperature: float | None = None, member_order=None) -> np.ndarray:
    """Quality-Weighted Cluster Sampling: ``n`` draws of (cluster, then an unchosen member).

    Each draw picks a cluster with probability exp(v/τ) / Σ exp(v'/τ) over the clusters that
    still have unchosen rows, then one of its unchosen rows uniformly. ``temperature`` τ > 0
    (``inf`` is uniform over clusters); None uses :func:`default_temperature` of the values of
    the clusters present — call it yourself to record the τ used. Rows come in draw order.

    member_order -- optional ``rows -> rows`` (a cluster's eligible rows, best first): a drawn
                    cluster then gives its next best row instead of a uniform one; clusters
                    with no eligible row left leave the draw as exhausted ones do.
    """
    labels, clusters, values = _validate(labels, cluster_values, n)
    tau = default_temperature(values) if temperature is None else float(temperature)
    if not (tau > 0):  # also rejects NaN
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    rng = np.random.default_rng(rng)
    # Drawing a member uniformly without replacement = walking a random permutation of the cluster.
    if member_order is None:
        queues = [rng.permutation(rows) for rows in _members_by_cluster(labels, clusters)]
    else:
        queues = [np.asarray(member_order(rows), dtype=np.int64) for rows in _members_by_cluster(labels, clusters)]
        _check_enough(queues, n)
    left = np.array([len(q) for q in queues])
    taken = np.zeros(len(clusters), dtype=np.int64)
    chosen = np.empty(n, dtype=np.int64)
    count = 0
    while count < n:
        # Draws from the full softmax that land on an exhausted cluster are discarded; the rest are
        # exactly draws from the softmax renormalised over the clusters left. The softmax is
        # recomputed (over the clusters left) after each batch so few draws are wasted.
        alive = left > 0
        probs = np.zeros(len(values))
        with np.errstate(over="ignore", under="ignore"):  # (v - top)/τ <= 0; a tiny τ may give -inf
            probs[alive] = np.exp((values[alive] - values[alive].max()) / tau)
        probs /= probs.sum()
        for c in rng.choice(len(clusters), size=n - count, p=probs):
            if left[c] == 0:
                continue
            chosen[count] = queues[c][taken[c]]
            taken[c] += 1
            left[c] -= 1
            count += 1
    return chosen


def default_temperature(values) -> float:
    """τ = the population standard deviation of the cluster values (FLAT_TEMPERATURE if 0).

    With this τ a cluster one standard deviation above another is e ≈ 2.7 times more likely
    to be drawn, whatever the scale of the values (Shapley values of a loss can be ~1e-3). When
    all values are equal every τ gives the uniform draw, and τ = FLAT_TEMPERATURE is reported.
    """
    values = np.asarray(list(values.values()) if isinstance(values, Mapping) else values, dtype=np.float64)
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError("default_temperature needs at least one value, all finite")
    std = float(values.std())
    return std if std > 0 else FLAT_TEMPERATURE


def topk_select(scores, n: int, rng=None) -> np.ndarray:
    """The ``n`` rows with the highest score, best first.

    Ties: with ``rng=None``, the lower row position wins; with an ``rng`` (Generator or seed),
    tied rows are ordered at random, reproducibly. NaN scores are an error; -inf is allowed.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {scores.shape}")
    _check_n(n, len(scores))
    if np.any(np.isnan(scores)):
        raise ValueError(f"scores contain NaN at rows {np.flatnonzero(np.isnan(scores))[:10].tolist()}")
    tiebreak = np.arange(len(scores)) if rng is None else np.random.default_rng(rng).permutation(len(scores))
    return np.lexsort((tiebreak, -scores))[:n].astype(np.int64)


def read_cluster_values(path: str | Path) -> dict[int, float]:
    """Read a CSV with a header and columns ``cluster,value`` (others ignored) -> {cluster: value}.

    Clusters are non-negative integers, each listed once; values are finite numbers.
    Any problem raises InputError naming the file and line.
    """
    path = Path(path)
    try:
        fh = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(path, f"cannot read the cluster values file: {exc.strerror or exc}") from None
    values: dict[int, float] = {}
    with fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        if "cluster" not in header or "value" not in header:
            raise InputError(path, f"expected a header with columns 'cluster' and 'value', got {header}", line=1)
        reader.fieldnames = header
        for row in reader:
            line = reader.line_num
            raw_c, raw_v = (row.get("cluster") or "").strip(), (row.get("value") or "").strip()
            if not raw_c and not raw_v and not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                continue  # blank line
            try:
                cluster = int(raw_c)
            except ValueError:
                raise InputError(path, f"cluster must be a non-negative integer, got {raw_c!r}", line=line) from None
            if cluster < 0:
                raise InputError(path, f"cluster must be a non-negative integer, got {raw_c!r}", line=line)
            try:
                value = float(raw_v)
            except ValueError:
                raise InputError(path, f"value must be a number, got {raw_v!r}", line=line) from None
            if not math.isfinite(value):
                raise InputError(path, f"value must be finite, got {raw_v!r}", line=line)
            if cluster in values:
                raise InputError(path, f"cluster {cluster} is listed twice", line=line)
            values[cluster] = value
    if not values:
        raise InputError(path, "no cluster values found")
    return values


# ---------------------------------------------------------------------------------------------


def _check_n(n, size: int) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ValueError(f"n must be an integer count, got {n!r}")
    if not 0 <= n <= size:
        raise ValueError(f"cannot select {n} rows from {size}")


def _check_enough(members: Sequence[np.ndarray], n: int) -> None:
    have = int(sum(len(m) for m in members))
    if have < n:
        raise ValueError(f"only {have} eligible rows in all clusters, fewer than n = {n}")


def _validate(labels, cluster_values, n) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (labels, the cluster ids present (sorted), their values) after checking everything."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integer cluster ids, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    _check_n(n, len(labels))
    if labels.size and labels.min() < 0:
        raise ValueError("cluster ids must be non-negative")
    clusters = np.unique(labels)
    table = _values_table(cluster_values)
    missing = [int(c) for c in clusters if int(c) not in table]
    if missing:
        raise ValueError(f"no value for clusters {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    extra = sorted(set(table) - set(clusters.tolist()))
    if extra and isinstance(cluster_values, Mapping):
        raise ValueError(f"values given for clusters with no rows: {extra[:10]}{' ...' if len(extra) > 10 else ''} "
                         "(were the values computed on another clustering?)")
    values = np.array([table[int(c)] for c in clusters], dtype=np.float64)
    if not np.all(np.isfinite(values)):
        bad = clusters[~np.isfinite(values)]
        raise ValueError(f"cluster values must be finite; clusters {bad[:10].tolist()} are not")
    return labels, clusters, values


def _values_table(cluster_values) -> dict[int, float]:
    if isinstance(cluster_values, Mapping):
        table = {}
        for key, value in cluster_values.items():
            if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
                raise ValueError(f"cluster ids must be integers, got {key!r}")
            table[int(key)] = float(value)
        return table
    if isinstance(cluster_values, (str, bytes)):
        raise ValueError("cluster_values must be a mapping or a sequence of numbers")
    array = np.asarray(cluster_values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"cluster_values as an array must be 1-D (indexed by cluster id), got shape {array.shape}")
    return dict(enumerate(array.tolist()))


def _members_by_cluster(labels: np.ndarray, clusters: np.ndarray) -> list[np.ndarray]:
    """Row positions of each cluster in ``clusters`` (ascending), via one stable sort."""
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], clusters, side="left")
    ends = np.searchsorted(labels[order], clusters, side="right")
    return [order[a:b] for a, b in zip(bounds, ends)]
