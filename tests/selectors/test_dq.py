"""DQ: GraphCut bins against a brute-force greedy, modes against each other, quotas, budget, seeds."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from scipy.stats import spearmanr

from shedkit.errors import ShedkitError
from shedkit.selectors.dq import (
    bin_sizes,
    dq_select,
    graphcut_bins,
    greedy_graphcut,
    kmeans_partitions,
    l2_normalize,
    sample_quotas,
)


def unit_rows(n: int, d: int, seed: int = 0) -> np.ndarray:
    return l2_normalize(np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32))


def clustered_rows(n: int, d: int = 24, clusters: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    labels = rng.integers(clusters, size=n)
    return l2_normalize((centres[labels] + 0.7 * rng.normal(size=(n, d))).astype(np.float32)), labels


def brute_force_bin(emb: np.ndarray, ground: list[int], size: int) -> tuple[list[int], list[float]]:
    """The GraphCut greedy written out: gain(x) = sum_{j in G} s(j,x) - 2 sum_{s in bin} s(s,x)."""
    sim = emb.astype(np.float64) @ emb.astype(np.float64).T
    chosen: list[int] = []
    gains: list[float] = []
    for _ in range(size):
        best, best_gain = -1, -np.inf
        for x in ground:  # ascending: a tie keeps the lower index
            if x in chosen:
                continue
            gain = sum(sim[j, x] for j in ground) - 2 * sum(sim[s, x] for s in chosen)
            if gain > best_gain:
                best, best_gain = x, gain
        chosen.append(best)
        gains.append(best_gain)
    return chosen, gains


def brute_force_bins(emb: np.ndarray, bins: int) -> np.ndarray:
    bin_of = np.full(len(emb), -1)
    remaining = list(range(len(emb)))
    for b, size in enumerate(bin_sizes(len(emb), bins)):
        chosen, _ = brute_force_bin(emb, remaining, int(size))
        bin_of[chosen] = b
        remaining = [i for i in remaining if i not in chosen]
    return bin_of


# ------------------------------------------------------------------------------ sizes and quotas


def test_bin_sizes_partition_the_pool():
    assert bin_sizes(23, 5).tolist() == [5, 5, 5, 4, 4]
    assert bin_sizes(20, 10).tolist() == [2] * 10
    assert bin_sizes(3, 5).tolist() == [1, 1, 1, 0, 0]
    for n in range(60):
        sizes = bin_sizes(n, 7)
        assert sizes.sum() == n and sizes.max() - sizes.min() <= 1


def test_sample_quotas_known_answers():
    assert sample_quotas(bin_sizes(100, 10), 25).tolist() == [3, 3, 3, 3, 3, 2, 2, 2, 2, 2]
    # bins smaller than their share hand the overflow on, in bin order
    assert sample_quotas(np.array([5, 1, 1, 1]), 6).tolist() == [3, 1, 1, 1]
    assert sample_quotas(np.array([1, 4, 0, 4]), 8).tolist() == [1, 4, 0, 3]
    with pytest.raises(ShedkitError):
        sample_quotas(np.array([1, 1]), 3)


def test_sample_quotas_exact_and_within_bins():
    rng = np.random.default_rng(0)
    for _ in range(300):
        sizes = rng.integers(0, 9, size=rng.integers(1, 12))
        n = int(rng.integers(0, sizes.sum() + 1))
        quotas = sample_quotas(sizes, n)
        assert quotas.sum() == n and (quotas <= sizes).all() and (quotas >= 0).all()


# ------------------------------------------------------------------------------ greedy GraphCut


@pytest.mark.parametrize("blocked", [False, True])
def test_greedy_matches_brute_force(blocked):
    emb = unit_rows(40, 6, seed=1)
    ground = np.ones(40, dtype=bool)
    ground[[3, 7, 11, 30]] = False
    sim = None if blocked else emb @ emb.T
    picks, gains = greedy_graphcut(emb, 12, ground, sim, cache_columns=3)  # 3 columns: many refills
    expected, expected_gains = brute_force_bin(emb, list(np.flatnonzero(ground)), 12)
    assert picks.tolist() == expected
    np.testing.assert_allclose(gains, expected_gains, rtol=1e-5, atol=1e-4)


def test_greedy_breaks_ties_to_the_lower_index():
    emb = np.tile(np.array([[1.0, 0.0]], dtype=np.float32), (5, 1))  # five identical rows
    for sim in (emb @ emb.T, None):
        picks, gains = greedy_graphcut(emb, 3, sim=sim)
        assert picks.tolist() == [0, 1, 2]
        np.testing.assert_allclose(gains, [5, 3, 1])  # 5 - 2*0, 5 - 2*1, 5 - 2*2


@pytest.mark.parametrize("mode", ["exact", "blocked"])
def test_bins_match_brute_force_bins(mode):
    emb = unit_rows(37, 5, seed=2)
    result = graphcut_bins(emb, 4, mode=mode)
    np.testing.assert_array_equal(result.bin_of, brute_force_bins(emb, 4))
    assert result.mode == mode == result.info["mode"]
    assert result.sizes.tolist() == [10, 9, 9, 9]


@pytest.mark.parametrize("mode", ["exact", "blocked", "partitioned"])
def test_bins_partition_the_pool_in_every_mode(mode):
    emb, _ = clustered_rows(203)
    result = graphcut_bins(emb, 10, mode=mode, partition_size=40)
    assert (result.bin_of >= 0).all() and (result.bin_of < 10).all()
    np.testing.assert_array_equal(np.bincount(result.bin_of, minlength=10), bin_sizes(203, 10))


# ------------------------------------------------------------------------------ modes agree


def test_blocked_mode_gives_the_exact_bins():
    """Same picks; only float rounding at exact ties could differ (none with these rows)."""
    emb, _ = clustered_rows(600, d=32, seed=3)
    exact = graphcut_bins(emb, 10, mode="exact")
    blocked = graphcut_bins(emb, 10, mode="blocked", cache_columns=16)
    np.testing.assert_array_equal(blocked.bin_of, exact.bin_of)


def test_partitioned_with_one_partition_is_exact():
    emb, _ = clustered_rows(300, seed=4)
    exact = graphcut_bins(emb, 7, mode="exact")
    one = graphcut_bins(emb, 7, mode="partitioned", partition_size=300)
    assert one.info["partitions"] == 1 and one.mode == "partitioned"
    np.testing.assert_array_equal(one.bin_of, exact.bin_of)


def test_partitioned_agrees_with_exact_in_structure():
    """With several partitions each bin is a GraphCut bin of every partition, not of the pool, so
    the bins differ row by row. "Agree" means here: (1) the same bin sizes; (2) each partition
    gives each bin its share (N_p // B or one more); (3) in both modes the bins run from central
    to peripheral (mean similarity to the pool falls with the bin index); (4) the selections of
    both modes keep the pool's cluster mix (total variation <= 0.15 from the pool's)."""
    emb, labels = clustered_rows(1200, d=24, clusters=8, seed=5)
    exact = graphcut_bins(emb, 10, mode="exact")
    part = graphcut_bins(emb, 10, mode="partitioned", partition_size=250)
    assert part.info["partitions"] >= 4
    np.testing.assert_array_equal(np.bincount(part.bin_of), np.bincount(exact.bin_of))
    for p in range(part.info["partitions"]):
        rows = part.partition_of == p
        counts = np.bincount(part.bin_of[rows], minlength=10)
        assert counts.max() - counts.min() <= 1 and counts.min() == rows.sum() // 10
    centrality = (emb @ emb.sum(axis=0)) / len(emb)
    for result in (exact, part):
        per_bin = [centrality[result.bin_of == b].mean() for b in range(10)]
        assert spearmanr(np.arange(10), per_bin)[0] <= -0.8
    pool_mix = np.bincount(labels, minlength=8) / len(labels)
    for mode in ("exact", "partitioned"):
        selected = dq_select(emb, 240, 10, seed=0, mode=mode, partition_size=250).selected
        mix = np.bincount(labels[selected], minlength=8) / 240
        assert 0.5 * np.abs(mix - pool_mix).sum() <= 0.15


def test_blocked_mode_never_holds_the_similarity_matrix():
    emb = unit_rows(3000, 16, seed=6)
    full_matrix = 3000 * 3000 * 4
    peaks = {}
    for mode in ("exact", "blocked"):
        tracemalloc.start()
        graphcut_bins(emb, 10, mode=mode)
        peaks[mode] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks["exact"] >= full_matrix
    assert peaks["blocked"] < full_matrix / 4


def test_kmeans_partitions_cover_the_pool_and_respect_the_cap():
    emb, _ = clustered_rows(900, clusters=3, seed=7)  # 3 big clusters, partitions of ~100 wanted
    parts = kmeans_partitions(emb, 100, seed=0)
    rows = np.concatenate(parts)
    assert sorted(rows.tolist()) == list(range(900))
    assert max(len(p) for p in parts) <= 200
    same = kmeans_partitions(np.ones((500, 4), dtype=np.float32), 100, seed=0)  # k-means cannot split
    assert sorted(np.concatenate(same).tolist()) == list(range(500)) and max(len(p) for p in same) <= 200


def test_auto_mode_follows_the_thresholds():
    for n, mode in [(40, "exact"), (80, "blocked"), (130, "partitioned")]:
        result = graphcut_bins(unit_rows(n, 8), 4, exact_max=50, partition_above=100, partition_size=40)
        assert result.mode == mode


# ------------------------------------------------------------------------------ selection


def test_exact_budget_and_per_bin_quotas():
    emb, _ = clustered_rows(157)
    for n in (1, 9, 10, 33, 157):
        res = dq_select(emb, n, bins=10, seed=1)
        assert len(res.selected) == n == len(np.unique(res.selected))
        np.testing.assert_array_equal(np.bincount(res.bin_of[res.selected], minlength=10), res.quotas)
        assert res.info["mode"] == "exact" and res.quotas.sum() == n


def test_seed_reproduces_and_another_seed_differs():
    emb, _ = clustered_rows(300)
    a = dq_select(emb, 30, seed=11).selected
    b = dq_select(emb, 30, seed=11).selected
    c = dq_select(emb, 30, seed=12).selected
    np.testing.assert_array_equal(a, b)
    assert set(a.tolist()) != set(c.tolist())


def test_bad_arguments_are_clear_errors():
    emb = unit_rows(20, 4)
    with pytest.raises(ShedkitError, match="budget"):
        dq_select(emb, 21)
    with pytest.raises(ShedkitError, match="bins"):
        dq_select(emb, 5, bins=30)
    with pytest.raises(ShedkitError, match="NaN"):
        dq_select(np.full((4, 3), np.nan), 2, bins=2)
    with pytest.raises(ShedkitError, match="mode"):
        dq_select(emb, 5, mode="fast")


def test_blocked_cache_handles_more_ties_than_cached_columns():
    emb = np.tile(np.array([[0.6, 0.8]], dtype=np.float32), (50, 1))
    picks, _ = greedy_graphcut(emb, 10, cache_columns=4)
    assert picks.tolist() == list(range(10))
