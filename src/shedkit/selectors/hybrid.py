"""SHED's cluster allocation with rows taken best-first inside each cluster. Pure numpy.

Cluster values decide how many rows each cluster gets, with SHED's own samplers (QOCS: whole
clusters in value order; QWCS: draws of a cluster by softmax of its value); inside a cluster
the rows go best-first by a per-row score instead of uniformly at random. Without a row score
(``row_scores=None``) this *is* SHED's sampling, draw for draw (same seed, same rows).

Eligibility: a row with no score (NaN) is never taken; ``row_keep = q < 1`` also keeps only
the best ``ceil(q * m)`` of the ``m`` scored rows of each cluster, which is what makes QOCS
filter inside the clusters it takes (QOCS otherwise takes its best clusters whole).
``row_order="random"`` takes a cluster's kept rows in a seeded random order instead of
best-first: the score then only filters (drops each cluster's worst share) and the rows
that pass are sampled as SHED samples, so the subset keeps the cluster's spread of lengths
and difficulty instead of its easiest rows. A
cluster with fewer eligible rows than it would get passes the rest on: QOCS moves on to the
next cluster, QWCS's draw skips exhausted clusters. The budget is always met exactly, or a
ValueError says how many rows were eligible.

``left_out`` says why each unselected row was not taken:
``no-score`` (its score is undefined), ``below-row-keep`` (outside its cluster's best share),
``cluster-not-reached`` (its cluster got no row: below QOCS's cut, or never drawn by QWCS),
``below-allocation`` (its cluster got rows, and this one ranked below them -- for random
order: it was not drawn).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from shedkit.selectors.samplers import default_temperature, qocs_sample, qwcs_sample

ROW_SCORES = ("first-order", "learnability", "ifd", "loss", "loss-ifd", "random")
ROW_ORDERS = ("best", "random")
LEFT_OUT = ("no-score", "below-row-keep", "cluster-not-reached", "below-allocation")


@dataclass
class HybridSelection:
    selected: np.ndarray  # positions in the order taken; exactly n
    eligible: np.ndarray  # bool per row
    left_out: list[str]  # per row: "" (selected) or one of LEFT_OUT
    allocation: dict[int, int] = field(default_factory=dict)  # rows taken per cluster id
    temperature: float | None = None  # QWCS τ used

    def info(self) -> dict:
        out = {"eligible": int(self.eligible.sum()),
               "clusters_used": int(sum(1 for c in self.allocation.values() if c)),
               **{f"left_out_{w.replace('-', '_')}": self.left_out.count(w) for w in LEFT_OUT}}
        if self.temperature is not None:
            out["temperature"] = self.temperature
        return out


def percentile_ranks(x) -> np.ndarray:
    """Each finite entry's rank among the finite entries, as a fraction in (0, 1] (ties share
    their mean rank); NaN stays NaN."""
    from scipy.stats import rankdata

    x = np.asarray(x, dtype=np.float64)
    out = np.full(len(x), np.nan)
    finite = np.isfinite(x)
    if finite.any():
        out[finite] = rankdata(x[finite]) / finite.sum()
    return out


def loss_ifd_score(loss, ifd) -> np.ndarray:
    """Minus the larger of a row's pool percentiles by base loss and by IFD: keeping the best
    share drops the rows either filter would drop (high loss: noise, truncation, boilerplate
    the model finds unlikely; high IFD: a response its instruction does not explain, e.g.
    one written for another instruction). NaN where either is undefined."""
    return -np.maximum(percentile_ranks(loss), percentile_ranks(ifd))


def best_first(rows: np.ndarray, scores: np.ndarray, row_keep: float = 1.0) -> np.ndarray:
    """A cluster's scored rows, highest score first (ties: lower position), the best
    ``ceil(row_keep * m)`` of its ``m`` scored rows."""
    rows = np.asarray(rows, dtype=np.int64)
    rows = rows[np.isfinite(scores[rows])]
    ordered = rows[np.lexsort((rows, -scores[rows]))]
    return ordered[: math.ceil(row_keep * len(ordered) - 1e-9)] if row_keep < 1 else ordered


def hybrid_select(labels, cluster_values, n: int, rng, sampler: str = "qocs", row_scores=None,
                  row_keep: float = 1.0, temperature: float | None = None,
                  row_order: str = "best") -> HybridSelection:
    """``n`` rows: SHED's allocation over clusters, rows best-first by ``row_scores`` inside
    them (``row_order="random"``: the kept rows in random order)."""
    labels = np.asarray(labels, dtype=np.int64)
    if sampler not in ("qocs", "qwcs"):
        raise ValueError(f"sampler must be 'qocs' or 'qwcs', not {sampler!r}")
    if row_order not in ROW_ORDERS:
        raise ValueError(f"row_order must be one of {', '.join(ROW_ORDERS)}, not {row_order!r}")
    rng = np.random.default_rng(rng)  # the samplers draw from this same generator
    row_keep = float(row_keep)
    if not 0 < row_keep <= 1:
        raise ValueError(f"row_keep must be in (0, 1], got {row_keep}")
    if row_scores is None:
        if row_keep < 1:
            raise ValueError("row_keep < 1 needs a row score (with random order every row is alike)")
        order = None
        scores = None
        eligible = np.ones(len(labels), dtype=bool)
    else:
        scores = np.asarray(row_scores, dtype=np.float64)
        if scores.shape != labels.shape:
            raise ValueError(f"{len(scores)} row scores for {len(labels)} rows")
        kept: dict[int, np.ndarray] = {}

        def order(rows: np.ndarray) -> np.ndarray:
            best = best_first(rows, scores, row_keep)
            kept[int(labels[rows[0]])] = best
            return rng.permutation(best) if row_order == "random" else best

        eligible = np.zeros(len(labels), dtype=bool)
    tau = None
    if sampler == "qocs":
        selected = qocs_sample(labels, cluster_values, n, rng, member_order=order)
    else:
        values = cluster_values
        if temperature is None:
            present = np.unique(labels)
            table = dict(cluster_values) if hasattr(cluster_values, "items") else dict(enumerate(cluster_values))
            tau = default_temperature([float(table[int(c)]) for c in present])
        else:
            tau = float(temperature)
        selected = qwcs_sample(labels, values, n, rng, temperature=tau, member_order=order)
    if scores is not None:
        for rows in kept.values():
            eligible[rows] = True
    return HybridSelection(selected, eligible, _left_out(labels, selected, eligible, scores),
                           _allocation(labels, selected), tau)


def _allocation(labels: np.ndarray, selected: np.ndarray) -> dict[int, int]:
    counts = {int(c): 0 for c in np.unique(labels)}
    for c, k in zip(*np.unique(labels[selected], return_counts=True)):
        counts[int(c)] = int(k)
    return counts


def _left_out(labels, selected, eligible, scores) -> list[str]:
    taken = np.zeros(len(labels), dtype=bool)
    taken[selected] = True
    used = np.zeros(int(labels.max()) + 1 if len(labels) else 0, dtype=bool)
    used[labels[selected]] = True
    out = np.full(len(labels), "", dtype=object)
    rest = ~taken
    out[rest & used[labels]] = "below-allocation"
    out[rest & ~used[labels]] = "cluster-not-reached"
    if scores is not None:
        out[rest & ~eligible] = "below-row-keep"
        out[rest & ~np.isfinite(scores)] = "no-score"
    return out.tolist()
