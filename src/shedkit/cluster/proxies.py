"""SHED's proxies: for each cluster, the member nearest its centroid."""

from __future__ import annotations

import numpy as np


def squared_distances_to_centers(X, labels, centers, chunk: int = 8192) -> np.ndarray:
    """||X[i] - centers[labels[i]]||^2 for every row, in float64, memory bounded."""
    X = np.asarray(X)
    out = np.empty(len(X), dtype=np.float64)
    for start in range(0, len(X), chunk):
        diff = X[start : start + chunk].astype(np.float64) - centers[labels[start : start + chunk]]
        out[start : start + chunk] = np.einsum("ij,ij->i", diff, diff)
    return out


def proxy_indices(X, labels, centers) -> np.ndarray:
    """Row position of each cluster's proxy: ``result[c]`` is the member of cluster ``c``
    nearest ``centers[c]`` (squared Euclidean distance in float64; ties to the lowest row).

    Every cluster in ``range(len(centers))`` must have a member: :class:`KMeans` guarantees
    it by dropping empty clusters; with labels from elsewhere, renumber them first.
    """
    X = np.asarray(X)
    labels = np.asarray(labels)
    centers = np.asarray(centers, dtype=np.float64)
    if X.ndim != 2 or centers.ndim != 2 or X.shape[1] != centers.shape[1]:
        raise ValueError(f"X {X.shape} and centers {centers.shape} must be 2-D with the same width")
    if labels.shape != (len(X),):
        raise ValueError(f"labels must have shape ({len(X)},), got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    k = len(centers)
    if len(labels) and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"labels must lie in [0, {k}) for {k} centers")
    sizes = np.bincount(labels, minlength=k)
    if np.any(sizes == 0):
        empty = np.flatnonzero(sizes == 0)
        raise ValueError(f"clusters without members have no proxy: {empty[:10].tolist()}"
                         f"{' ...' if len(empty) > 10 else ''}; drop them and renumber the labels")
    dist = squared_distances_to_centers(X, labels, centers)
    order = np.lexsort((np.arange(len(X)), dist, labels))  # by cluster, then distance, then row
    sorted_labels = labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    proxies = np.empty(k, dtype=np.int64)
    proxies[sorted_labels[starts]] = order[starts]
    return proxies
