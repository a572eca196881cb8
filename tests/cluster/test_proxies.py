"""proxy_indices: the member nearest each centroid, checked by brute force."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shedkit.cluster import KMeans, proxy_indices


def brute_force_proxies(X, labels, centers):
    out = []
    for c in range(len(centers)):
        best, best_d = None, None
        for i in range(len(X)):  # ascending rows: strict < keeps the lowest index on ties
            if labels[i] != c:
                continue
            d = float(np.sum((X[i].astype(np.float64) - centers[c].astype(np.float64)) ** 2))
            if best is None or d < best_d:
                best, best_d = i, d
        out.append(best)
    return np.array(out)


def test_proxies_of_a_real_clustering_are_the_nearest_members():
    X = np.random.default_rng(0).normal(size=(400, 10)).astype(np.float32)
    km = KMeans(20, seed=0, backend="sklearn").fit(X)
    proxies = proxy_indices(X, km.labels_, km.centers_)
    np.testing.assert_array_equal(proxies, brute_force_proxies(X, km.labels_, km.centers_))
    assert np.all(km.labels_[proxies] == np.arange(20))


def test_ties_go_to_the_lowest_row():
    X = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [5.0, 5.0], [5.0, 5.0]], dtype=np.float32)
    labels = np.array([0, 0, 0, 1, 1])
    centers = np.array([[0.0, 0.0], [5.0, 5.0]])
    np.testing.assert_array_equal(proxy_indices(X, labels, centers), [0, 3])


def test_validation():
    X = np.zeros((3, 2))
    with pytest.raises(ValueError, match="without members"):
        proxy_indices(X, np.array([0, 0, 2]), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="lie in"):
        proxy_indices(X, np.array([0, 0, 3]), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="same width"):
        proxy_indices(X, np.array([0, 0, 0]), np.zeros((1, 3)))
    with pytest.raises(ValueError, match="integers"):
        proxy_indices(X, np.array([0.0, 0.0, 0.0]), np.zeros((1, 2)))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 30), st.integers(1, 5), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_matches_brute_force_on_random_inputs(n, k, d, seed):
    k = min(k, n)
    rng = np.random.default_rng(seed)
    X = rng.integers(-2, 3, size=(n, d)).astype(np.float32)  # small integers: many exact ties
    labels = np.concatenate([np.arange(k), rng.integers(0, k, size=n - k)])
    rng.shuffle(labels)
    centers = rng.integers(-2, 3, size=(k, d)).astype(np.float32)
    np.testing.assert_array_equal(proxy_indices(X, labels, centers), brute_force_proxies(X, labels, centers))
