"""QOCS, QWCS, top-k and the cluster-values file: budgets, distinctness, following the values, seeds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from shedkit.errors import InputError
from shedkit.selectors.samplers import (
    FLAT_TEMPERATURE,
    default_temperature,
    qocs_sample,
    qwcs_sample,
    read_cluster_values,
    topk_select,
)

# 5 clusters of sizes 3, 5, 2, 10, 4 (24 rows), labels shuffled so positions carry no hint
SIZES = [3, 5, 2, 10, 4]
LABELS = np.random.default_rng(0).permutation(np.repeat(np.arange(5), SIZES))
VALUES = {0: 0.1, 1: 0.9, 2: 0.5, 3: -1.0, 4: 0.3}


def clusters_of(rows):
    return LABELS[rows]


# ------------------------------------------------------------------------------------------- QOCS


@pytest.mark.parametrize("n", range(0, 25))
def test_qocs_exact_budget_distinct_and_in_value_order(n):
    rows = qocs_sample(LABELS, VALUES, n, np.random.default_rng(0))
    assert len(rows) == n == len(set(rows.tolist()))
    assert rows.dtype == np.int64
    # clusters by decreasing value: 1 (5 rows), 2 (2), 4 (4), 0 (3), 3 (10)
    order, filled = [1, 2, 4, 0, 3], 0
    counts = np.bincount(clusters_of(rows), minlength=5)
    for c in order:
        take = min(SIZES[c], n - filled)
        assert counts[c] == take, (n, c)
        filled += take


def test_qocs_samples_only_the_last_cluster_and_follows_the_seed():
    # n = 9: clusters 1 and 2 whole (7 rows), then 2 of cluster 4's 4 rows
    a = qocs_sample(LABELS, VALUES, 9, 1)
    assert set(np.flatnonzero(np.isin(LABELS, [1, 2])).tolist()) <= set(a.tolist())
    assert a.tolist() == qocs_sample(LABELS, VALUES, 9, 1).tolist()
    draws = {tuple(sorted(qocs_sample(LABELS, VALUES, 9, s).tolist())) for s in range(20)}
    assert len(draws) > 1


def test_qocs_ties_broken_by_cluster_id():
    labels = np.repeat([0, 1, 2], 4)
    for values in ({0: 1.0, 1: 1.0, 2: 1.0}, [1.0, 1.0, 1.0]):
        rows = qocs_sample(labels, values, 6, 0)
        assert np.bincount(labels[rows], minlength=3).tolist() == [4, 2, 0]


def test_qocs_accepts_array_values_and_sparse_cluster_ids():
    labels = np.array([7, 7, 3, 3, 3])
    rows = qocs_sample(labels, {3: 0.0, 7: 1.0}, 3, 0)
    assert sorted(rows.tolist())[:2] == [0, 1] and len(rows) == 3


# ------------------------------------------------------------------------------------------- QWCS


@pytest.mark.parametrize("n", range(0, 25))
def test_qwcs_exact_budget_and_distinct_even_when_clusters_run_out(n):
    rows = qwcs_sample(LABELS, VALUES, n, np.random.default_rng(n), temperature=0.05)
    assert len(rows) == n == len(set(rows.tolist()))
    assert rows.min(initial=0) >= 0 and rows.max(initial=0) < len(LABELS)


def test_qwcs_cluster_frequencies_match_the_softmax():
    # 4 clusters of 5,000 rows and n = 4,000 draws: no cluster can run out, so the cluster of
    # every draw is an independent categorical draw from softmax(v / tau).
    values = np.array([0.0, 0.5, 1.0, 2.0])
    tau = 0.8
    labels = np.repeat(np.arange(4), 5000)
    rows = qwcs_sample(labels, values, 4000, np.random.default_rng(123), temperature=tau)
    observed = np.bincount(labels[rows], minlength=4)
    p = np.exp(values / tau) / np.exp(values / tau).sum()
    chi2 = ((observed - 4000 * p) ** 2 / (4000 * p)).sum()
    assert chi2 < stats.chi2.ppf(1 - 1e-4, df=3), (observed, 4000 * p)
    # and the draws inside a cluster are uniform over its members: first half vs second half
    first = labels[rows] == 3
    within = rows[first] - 15000
    z = (np.sum(within < 2500) - first.sum() / 2) / np.sqrt(first.sum() / 4)
    assert abs(z) < 4


def test_qwcs_default_temperature_is_the_std_and_recorded():
    values = [0.0, 0.5, 1.0, 2.0]
    assert default_temperature(values) == pytest.approx(np.std(values))
    labels = np.repeat(np.arange(4), 50)
    explicit = qwcs_sample(labels, values, 40, 7, temperature=default_temperature(values))
    np.testing.assert_array_equal(qwcs_sample(labels, values, 40, 7), explicit)


def test_default_temperature_floor_and_validation():
    assert default_temperature([0.3, 0.3, 0.3]) == FLAT_TEMPERATURE
    assert default_temperature({0: 5.0}) == FLAT_TEMPERATURE
    assert default_temperature([1e-4, 3e-4]) == pytest.approx(1e-4)
    with pytest.raises(ValueError):
        default_temperature([])
    with pytest.raises(ValueError):
        default_temperature([1.0, np.nan])


def test_qwcs_low_temperature_takes_the_best_cluster_first_high_is_uniform():
    labels = np.repeat(np.arange(3), 100)
    rows = qwcs_sample(labels, [0.0, 1.0, 0.5], 100, 0, temperature=1e-3)
    assert np.all(labels[rows] == 1)
    rows = qwcs_sample(labels, [0.0, 1.0, 0.5], 150, 0, temperature=np.inf)
    counts = np.bincount(labels[rows], minlength=3)
    assert np.all(np.abs(counts - 50) < 4 * np.sqrt(150 * (1 / 3) * (2 / 3)))


def test_qwcs_tiny_temperature_does_not_overflow_and_exhausted_clusters_leave():
    labels = np.array([0] * 2 + [1] * 3 + [2] * 50)
    rows = qwcs_sample(labels, [1e6, 5e5, 0.0], 10, 0, temperature=1e-300)
    assert labels[rows].tolist() == [0, 0, 1, 1, 1, 2, 2, 2, 2, 2]


def test_qwcs_seeds():
    a = qwcs_sample(LABELS, VALUES, 12, 42)
    np.testing.assert_array_equal(a, qwcs_sample(LABELS, VALUES, 12, np.random.default_rng(42)))
    assert not np.array_equal(a, qwcs_sample(LABELS, VALUES, 12, 43))


@pytest.mark.parametrize("tau", [0, -1.0, float("nan")])
def test_qwcs_rejects_bad_temperature(tau):
    with pytest.raises(ValueError, match="temperature"):
        qwcs_sample(LABELS, VALUES, 3, 0, temperature=tau)


# ---------------------------------------------------------------------------------- shared checks


@pytest.mark.parametrize("sampler", [qocs_sample, qwcs_sample])
def test_sampler_input_validation(sampler):
    with pytest.raises(ValueError, match="cannot select 25"):
        sampler(LABELS, VALUES, 25, 0)
    with pytest.raises(ValueError, match="cannot select -1"):
        sampler(LABELS, VALUES, -1, 0)
    with pytest.raises(ValueError, match="integer count"):
        sampler(LABELS, VALUES, 2.0, 0)
    with pytest.raises(ValueError, match="integer count"):
        sampler(LABELS, VALUES, True, 0)
    with pytest.raises(ValueError, match="no value for clusters \\[4\\]"):
        sampler(LABELS, {c: v for c, v in VALUES.items() if c != 4}, 3, 0)
    with pytest.raises(ValueError, match="no rows: \\[9\\]"):
        sampler(LABELS, {**VALUES, 9: 1.0}, 3, 0)
    with pytest.raises(ValueError, match="finite"):
        sampler(LABELS, {**VALUES, 2: float("nan")}, 3, 0)
    with pytest.raises(ValueError, match="integer cluster ids"):
        sampler(LABELS.astype(float), VALUES, 3, 0)
    with pytest.raises(ValueError, match="non-negative"):
        sampler(np.array([-1, 0]), [1.0], 1, 0)
    with pytest.raises(ValueError, match="no value"):
        sampler(LABELS, [0.1, 0.2], 3, 0)  # array too short for cluster ids 2..4


@settings(max_examples=80, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 8), min_size=1, max_size=6),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_property_exact_distinct_in_range(sizes, seed, data):
    labels = np.random.default_rng(seed).permutation(np.repeat(np.arange(len(sizes)), sizes))
    values = data.draw(st.lists(st.floats(-5, 5), min_size=len(sizes), max_size=len(sizes)))
    n = data.draw(st.integers(0, len(labels)))
    for rows in (qocs_sample(labels, values, n, seed), qwcs_sample(labels, values, n, seed)):
        assert len(rows) == n == len(np.unique(rows))
        assert np.all((rows >= 0) & (rows < len(labels)))


# ------------------------------------------------------------------------------------------ top-k


def test_topk_best_first_ties_to_lower_row():
    assert topk_select([0.1, 0.9, 0.5, 0.9, -np.inf], 3).tolist() == [1, 3, 2]
    assert topk_select([1.0, 1.0, 1.0], 2).tolist() == [0, 1]
    assert topk_select([3.0, 1.0], 0).tolist() == []


def test_topk_random_tiebreak_is_seeded():
    scores = np.zeros(50)
    a = topk_select(scores, 10, rng=1)
    np.testing.assert_array_equal(a, topk_select(scores, 10, rng=1))
    assert not np.array_equal(a, topk_select(scores, 10, rng=2))
    assert topk_select([5.0, 1.0, 5.0, 0.0], 2, rng=3).tolist() in ([0, 2], [2, 0])


def test_topk_validation():
    with pytest.raises(ValueError, match="NaN"):
        topk_select([1.0, np.nan], 1)
    with pytest.raises(ValueError, match="cannot select 3"):
        topk_select([1.0, 2.0], 3)
    with pytest.raises(ValueError, match="1-D"):
        topk_select([[1.0]], 1)


# ---------------------------------------------------------------------------------- values file


def write(tmp_path, text, name="values.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_read_cluster_values(tmp_path):
    path = write(tmp_path, "\ufeffcluster, value ,stderr\n0,0.5,0.1\n2,-1e-3,0.2\n\n1,3,0\n")
    assert read_cluster_values(path) == {0: 0.5, 2: -0.001, 1: 3.0}


@pytest.mark.parametrize(
    "text, message, line",
    [
        ("id,value\n0,1\n", "columns 'cluster' and 'value'", 1),
        ("cluster,value\n0,1\nx,2\n", "non-negative integer", 3),
        ("cluster,value\n-1,2\n", "non-negative integer", 2),
        ("cluster,value\n0,abc\n", "must be a number", 2),
        ("cluster,value\n0,nan\n", "finite", 2),
        ("cluster,value\n0,1\n1,2\n0,3\n", "listed twice", 4),
        ("cluster,value\n0\n", "must be a number", 2),
    ],
)
def test_read_cluster_values_errors_name_file_and_line(tmp_path, text, message, line):
    path = write(tmp_path, text)
    with pytest.raises(InputError, match=message) as err:
        read_cluster_values(path)
    assert err.value.line == line and str(path) in str(err.value)


def test_read_cluster_values_missing_or_empty(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        read_cluster_values(tmp_path / "absent.csv")
    with pytest.raises(InputError, match="no cluster values"):
        read_cluster_values(write(tmp_path, "cluster,value\n"))
    with pytest.raises(InputError, match="columns"):
        read_cluster_values(write(tmp_path, ""))
