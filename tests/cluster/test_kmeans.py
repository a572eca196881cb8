"""KMeans (faiss and scikit-learn backends), default K, empty-cluster handling."""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest

from shedkit.cluster import KMeans, default_num_clusters, resolve_backend
from shedkit.cluster import kmeans as kmeans_module

HAS_FAISS = importlib.util.find_spec("faiss") is not None
BACKENDS = [pytest.param("faiss", marks=pytest.mark.skipif(not HAS_FAISS, reason="faiss not installed")), "sklearn"]


def blobs(k=5, per=40, d=16, seed=0, spread=0.05):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 3
    X = np.concatenate([c + spread * rng.normal(size=(per, d)) for c in centers]).astype(np.float32)
    truth = np.repeat(np.arange(k), per)
    perm = rng.permutation(len(X))
    return X[perm], truth[perm]


def same_partition(a, b) -> bool:
    """Two labelings are the same partition iff the label pairs form a bijection."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("n, k", [(1, 1), (2, 1), (3, 2), (100, 10), (3000, 55), (100_000, 316)])
def test_default_num_clusters(n, k):
    assert default_num_clusters(n) == k


def test_default_num_clusters_rejects_empty():
    with pytest.raises(ValueError):
        default_num_clusters(0)


def test_init_only_stores_parameters():
    km = KMeans(7, seed=3, backend="sklearn", max_iter=10)
    assert (km.n_clusters, km.seed, km.backend, km.max_iter) == (7, 3, "sklearn", 10)
    assert not hasattr(km, "labels_")


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_recovers_blobs_and_reports_consistent_state(backend):
    X, truth = blobs()
    km = KMeans(5, seed=0, backend=backend)
    assert km.fit(X) is km
    assert km.backend_ == backend
    assert km.labels_.shape == (len(X),) and km.centers_.shape == (5, X.shape[1])
    assert km.centers_.dtype == np.float32
    assert same_partition(km.labels_, truth)
    # labels are the nearest centre (brute force) and inertia is their squared distance sum
    d2 = ((X[:, None, :].astype(np.float64) - km.centers_[None].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_array_equal(km.labels_, d2.argmin(1))
    assert km.inertia_ == pytest.approx(d2.min(1).sum(), rel=1e-6)
    np.testing.assert_array_equal(km.predict(X), km.labels_)


@pytest.mark.parametrize("backend", BACKENDS)
def test_seeded_and_reproducible(backend):
    X = np.random.default_rng(1).normal(size=(300, 8)).astype(np.float32)
    a = KMeans(12, seed=5, backend=backend).fit(X)
    b = KMeans(12, seed=5, backend=backend).fit(X)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.centers_, b.centers_)
    c = KMeans(12, seed=6, backend=backend).fit(X)
    assert not np.array_equal(a.centers_, c.centers_)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_agree_on_quality(backend):
    X = np.random.default_rng(2).normal(size=(600, 8)).astype(np.float32)
    inertia = KMeans(20, seed=0, backend=backend).fit(X).inertia_
    reference = KMeans(20, seed=0, backend="sklearn").fit(X).inertia_
    assert inertia <= 1.1 * reference


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_clusters_are_dropped_and_renumbered(backend):
    X = np.repeat(np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32), 5, axis=0)  # 4 distinct rows
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        km = KMeans(7, seed=0, backend=backend).fit(X)
    assert km.n_clusters_ == 4 and len(km.centers_) == 4
    assert sorted(set(km.labels_.tolist())) == [0, 1, 2, 3]
    assert any("empty" in str(w.message) for w in caught)


def test_k_equal_n_and_single_cluster():
    X = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    assert sorted(KMeans(6, backend="sklearn").fit(X).labels_.tolist()) == list(range(6))
    km = KMeans(1, backend="sklearn").fit(X)
    np.testing.assert_allclose(km.centers_[0], X.mean(0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", [0, 11, 2.5, "3"])
def test_bad_n_clusters(bad):
    with pytest.raises(ValueError, match="n_clusters"):
        KMeans(bad, backend="sklearn").fit(np.zeros((10, 2), dtype=np.float32))


def test_bad_inputs():
    with pytest.raises(ValueError, match="NaN"):
        KMeans(2, backend="sklearn").fit(np.array([[0.0, np.nan], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="2-D"):
        KMeans(1, backend="sklearn").fit(np.zeros(5))
    with pytest.raises(ValueError, match="backend"):
        KMeans(2, backend="torch").fit(np.zeros((4, 2)))


def test_auto_backend(monkeypatch):
    assert resolve_backend("auto") == ("faiss" if HAS_FAISS else "sklearn")
    real = importlib.util.find_spec
    monkeypatch.setattr(kmeans_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "faiss" else real(name, *a))
    assert resolve_backend("auto") == "sklearn"
