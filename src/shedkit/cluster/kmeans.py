"""Seeded k-means++ as an sklearn-style estimator, on faiss or scikit-learn.

Both backends start from a seeded k-means++ initialisation and run Lloyd iterations on every
row (faiss's subsampling is turned off). Whatever the backend, the final labels are computed
here the same way (nearest centre, ties to the lower centre index), and centres left without
members are dropped, so ``labels_`` takes every value in ``range(n_clusters_)``.
"""

from __future__ import annotations

import importlib.util
import math
import warnings

import numpy as np

from shedkit.errors import require

BACKENDS = ("auto", "faiss", "sklearn")


def default_num_clusters(n: int) -> int:
    """round(sqrt(n)), at least 1 (SHED used K=3,000 for ~100k rows; sqrt gives ~316)."""
    if n < 1:
        raise ValueError(f"cannot cluster {n} rows")
    return max(1, int(math.floor(math.sqrt(n) + 0.5)))


def resolve_backend(backend: str) -> str:
    """"auto" -> "faiss" when it is installed, else "sklearn"."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown k-means backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "faiss" if importlib.util.find_spec("faiss") is not None else "sklearn"
    return backend


class KMeans:
    """k-means with seeded k-means++ initialisation.

    Parameters are only stored by ``__init__``; ``fit(X)`` learns ``labels_`` (n,),
    ``centers_`` (n_clusters_, d) float32, ``inertia_`` (sum of squared distances to the
    assigned centre), ``n_clusters_`` (n_clusters minus any empty cluster dropped) and
    ``backend_`` (the backend actually used).
    """

    def __init__(self, n_clusters: int = 8, *, seed: int = 0, backend: str = "auto", max_iter: int = 50,
                 n_init: int = 1, tol: float = 1e-4):
        self.n_clusters = n_clusters
        self.seed = seed
        self.backend = backend
        self.max_iter = max_iter
        self.n_init = n_init
        self.tol = tol

    def fit(self, X) -> "KMeans":
        X = _as_float32_matrix(X)
        n, k = len(X), self.n_clusters
        if not (isinstance(k, (int, np.integer)) and 1 <= k <= n):
            raise ValueError(f"n_clusters must be an integer in [1, {n}] for {n} rows, got {k!r}")
        if self.max_iter < 1 or self.n_init < 1:
            raise ValueError("max_iter and n_init must be >= 1")
        backend = resolve_backend(self.backend)
        fit = _fit_faiss if backend == "faiss" else _fit_sklearn
        centers = fit(X, int(k), int(self.seed), int(self.max_iter), int(self.n_init), float(self.tol))
        labels = assign_nearest(X, centers)
        sizes = np.bincount(labels, minlength=len(centers))
        if np.any(sizes == 0):
            keep = np.flatnonzero(sizes)
            warnings.warn(
                f"k-means left {len(centers) - len(keep)} of {len(centers)} clusters empty (too few distinct "
                f"rows?); they are dropped and the rest renumbered", stacklevel=2,
            )
            remap = np.full(len(centers), -1, dtype=np.int64)
            remap[keep] = np.arange(len(keep))
            centers, labels = centers[keep], remap[labels]
        from shedkit.cluster.proxies import squared_distances_to_centers

        self.labels_ = labels
        self.centers_ = np.ascontiguousarray(centers, dtype=np.float32)
        self.inertia_ = float(squared_distances_to_centers(X, labels, self.centers_).sum())
        self.n_clusters_ = len(self.centers_)
        self.backend_ = backend
        return self

    def predict(self, X) -> np.ndarray:
        return assign_nearest(_as_float32_matrix(X), self.centers_)

    def fit_predict(self, X) -> np.ndarray:
        return self.fit(X).labels_


def assign_nearest(X: np.ndarray, centers: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Index of the nearest centre for each row (ties to the lower index), memory bounded."""
    c_sq = np.einsum("ij,ij->i", centers, centers)
    labels = np.empty(len(X), dtype=np.int64)
    for start in range(0, len(X), chunk):
        block = X[start : start + chunk]
        # |x|^2 is constant per row, so argmin of |c|^2 - 2 x.c is the nearest centre
        labels[start : start + chunk] = np.argmin(c_sq[None, :] - 2.0 * (block @ centers.T), axis=1)
    return labels


def _as_float32_matrix(X) -> np.ndarray:
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"expected a non-empty 2-D array of vectors, got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError("vectors contain NaN or infinity")
    return X


def _fit_sklearn(X, k, seed, max_iter, n_init, tol) -> np.ndarray:
    from sklearn.cluster import KMeans as SKKMeans
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # duplicates: empty clusters handled by the caller
        model = SKKMeans(n_clusters=k, init="k-means++", n_init=n_init, max_iter=max_iter, tol=tol,
                         random_state=seed, algorithm="lloyd").fit(X)
    return np.asarray(model.cluster_centers_, dtype=np.float32)


def _fit_faiss(X, k, seed, max_iter, n_init, tol) -> np.ndarray:
    faiss = require("faiss", "faiss", "k-means with --cluster-backend faiss")
    n, d = X.shape
    km = faiss.Kmeans(
        d, k, niter=max_iter, nredo=n_init, seed=seed % (2**31), verbose=False,
        min_points_per_centroid=1, max_points_per_centroid=max(256, -(-n // k)),  # no subsampling
    )
    init = None
    if hasattr(faiss, "ClusteringInitMethod_KMEANS_PLUS_PLUS"):
        km.cp.init_method = faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS
    else:  # older faiss: seed it with scikit-learn's k-means++ centres
        from sklearn.cluster import kmeans_plusplus

        init, _ = kmeans_plusplus(X, k, random_state=seed)
        init = np.ascontiguousarray(init, dtype=np.float32)
    km.train(X, init_centroids=init)
    return np.asarray(km.centroids, dtype=np.float32).reshape(k, d)
