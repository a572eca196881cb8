"""LoBaSS learnability selection: score, guards, quotas -- exact budgets and known answers."""

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from shedkit.errors import ShedkitError
from shedkit.selectors.learnability import (
    guard_mask,
    guard_masks,
    largest_remainder,
    learnability,
    parse_quota,
    quota_counts,
    select_learnable,
)


def test_learnability_formula_and_undefined_rows():
    base = np.array([2.0, 1.0, 4.0, 0.0, np.nan, 1.0, np.inf])
    ref = np.array([1.0, 1.5, 1.0, 0.5, 1.0, np.nan, 1.0])
    s = learnability(base, ref)
    np.testing.assert_allclose(s[:3], [0.5, -0.5, 0.75])
    assert np.isnan(s[3:]).all()  # base 0, base NaN, ref NaN, base inf: undefined, never a number


def test_top_n_by_score_with_ties_to_lower_position():
    base = np.ones(6)
    ref = np.array([0.5, 0.2, 0.5, 0.9, 0.2, 0.5])  # scores .5 .8 .5 .1 .8 .5
    sel = select_learnable(base, ref, 4)
    assert sel.selected.tolist() == [1, 4, 0, 2]
    assert select_learnable(base, np.full(6, 0.5), 3).selected.tolist() == [0, 1, 2]


def test_undefined_rows_are_never_selected_and_counted():
    base = np.array([1.0, np.nan, 1.0, 0.0, 1.0])
    ref = np.array([0.9, 0.0, 0.1, 0.0, np.nan])
    sel = select_learnable(base, ref, 2)
    assert sel.selected.tolist() == [2, 0]
    assert sel.info()["excluded_undefined"] == 3
    with pytest.raises(ShedkitError, match="only 2 of 5 rows are eligible.*3 undefined"):
        select_learnable(base, ref, 3)


def test_guards_drop_the_right_quantiles():
    rng = np.random.default_rng(0)
    base = rng.permutation(np.arange(1, 21, dtype=float))  # distinct losses 1..20
    easy, hard = guard_masks(base, 0.1, 0.25)
    assert sorted(base[easy]) == [1.0, 2.0]  # floor(0.1 * 20) lowest
    assert sorted(base[hard]) == [16.0, 17.0, 18.0, 19.0, 20.0]  # floor(0.25 * 20) highest
    kept = guard_mask(base, 0.1, 0.25)
    assert sorted(base[kept]) == list(np.arange(3.0, 16.0))
    # ties: exact counts, the lower position counts as lower
    easy, _ = guard_masks(np.ones(10), 0.3, 0.0)
    assert np.flatnonzero(easy).tolist() == [0, 1, 2]
    with pytest.raises(ShedkitError, match="easy_quantile"):
        guard_masks(base, 1.0, 0.0)
    with pytest.raises(ShedkitError, match="< 1"):
        guard_masks(base, 0.5, 0.5)


def test_guards_count_defined_rows_only_and_error_when_too_few_left():
    base = np.array([5.0, np.nan, 1.0, 2.0, 3.0, 4.0])
    ref = np.full(6, 0.5)
    sel = select_learnable(base, ref, 3, easy_quantile=0.2, hard_quantile=0.2)  # 5 defined: drop 1 + 1
    assert sel.excluded == ["hard", "undefined", "easy", "", "", ""]
    assert sorted(sel.selected.tolist()) == [3, 4, 5]
    with pytest.raises(ShedkitError, match=r"only 3 of 6 rows.*budget 4.*1 easy, 1 hard"):
        select_learnable(base, ref, 4, easy_quantile=0.2, hard_quantile=0.2)


def test_parse_quota():
    assert parse_quota(["alpaca=0.7", "gsm8k=0.3"]) == pytest.approx({"alpaca": 0.7, "gsm8k": 0.3})
    assert parse_quota("a=7,b=3") == pytest.approx({"a": 0.7, "b": 0.3})
    assert parse_quota({"x": 1, "y": 1, "z": 2}) == pytest.approx({"x": 0.25, "y": 0.25, "z": 0.5})
    assert parse_quota("k=v=1") == {"k=v": 1.0}  # the last '=' separates the share
    assert parse_quota(None) == {}
    for bad in (["alpaca"], ["a=x"], ["a=-1"], ["a=0"], ["a=1", "a=2"], ["=1"], ["a=nan"]):
        with pytest.raises(ShedkitError):
            parse_quota(bad)


def test_quota_counts_known_answers():
    assert quota_counts({"a": 0.7, "b": 0.3}, {"a": 100, "b": 100}, 10) == {"a": 7, "b": 3}
    # largest remainder: 1/3 each of 10 -> 3.33 each, the first key gets the extra row
    assert quota_counts({"a": 1, "b": 1, "c": 1}, {"a": 9, "b": 9, "c": 9}, 10) == {"a": 4, "b": 3, "c": 3}
    # a short group is taken whole; what it cannot fill goes to the others by their shares
    assert quota_counts({"a": 0.5, "b": 0.3, "c": 0.2}, {"a": 2, "b": 100, "c": 100}, 10) == {"a": 2, "b": 5, "c": 3}
    # redistribution can push another group over its rows: repeated until all fit
    assert quota_counts({"a": 0.5, "b": 0.3, "c": 0.2}, {"a": 2, "b": 4, "c": 100}, 10) == {"a": 2, "b": 4, "c": 4}
    with pytest.raises(ShedkitError, match="fewer than the budget 10"):
        quota_counts({"a": 0.5, "b": 0.5}, {"a": 4, "b": 5}, 10)


def test_quota_selection_end_to_end_and_errors():
    groups = ["m", "s"] * 10
    base = np.ones(20)
    ref = np.linspace(0.1, 0.9, 20)  # lower positions score higher
    sel = select_learnable(base, ref, 5, groups=groups, quota=["m=0.6", "s=0.4"])
    assert sel.group_selected == {"m": 3, "s": 2}
    assert sorted(sel.selected.tolist()) == [0, 1, 2, 3, 4]
    # with quota_by alone, groups keep their pool shares (stratified)
    uneven = ["a"] * 15 + ["b"] * 5
    assert select_learnable(base, ref, 8, groups=uneven).group_selected == {"a": 6, "b": 2}
    # a group without a share is never selected
    sel = select_learnable(base, ref, 4, groups=["a", "b", "c", "d"] * 5, quota="a=1,b=1")
    assert {i % 4 for i in sel.selected} == {0, 1} and sel.excluded.count("no-quota") == 10
    with pytest.raises(ShedkitError, match="do not occur"):
        select_learnable(base, ref, 5, groups=groups, quota=["math=1"])
    with pytest.raises(ShedkitError, match="quota needs group labels"):
        select_learnable(base, ref, 5, quota=["m=1"])


# -- properties ---------------------------------------------------------------------------

@st.composite
def pools(draw):
    size = draw(st.integers(1, 60))
    finite = st.floats(0.01, 10, allow_nan=False)
    base = draw(st.lists(st.one_of(finite, st.sampled_from([np.nan, 0.0])) if draw(st.booleans()) else finite,
                         min_size=size, max_size=size))
    # few distinct values so ties are common
    ref = draw(st.lists(st.sampled_from([0.05, 0.5, 1.0, 2.0, 5.0]) | finite, min_size=size, max_size=size))
    groups = draw(st.lists(st.sampled_from("abc"), min_size=size, max_size=size))
    return np.array(base), np.array(ref), groups


quantiles = st.sampled_from([0.0, 0.05, 0.1, 0.2, 0.33])


@settings(max_examples=200, deadline=None)
@given(pools(), st.data(), quantiles, quantiles)
def test_property_exact_budget_topk_and_guards(pool, data, easy, hard):
    base, ref, _ = pool
    n = data.draw(st.integers(0, len(base)))
    try:
        sel = select_learnable(base, ref, n, easy_quantile=easy, hard_quantile=hard)
    except ShedkitError as exc:
        assert "fewer than the budget" in str(exc)
        kept = guard_mask(base, easy, hard, defined=np.isfinite(learnability(base, ref)))
        assert kept.sum() < n  # the error is raised exactly when too few rows are left
        return
    chosen = sel.selected
    assert len(chosen) == n == len(set(chosen.tolist()))
    assert sel.eligible[chosen].all() and np.isfinite(sel.scores[chosen]).all()
    # top-n: no eligible row left out scores higher than the worst row chosen
    if 0 < n:
        rest = np.setdiff1d(np.flatnonzero(sel.eligible), chosen)
        assert not len(rest) or sel.scores[rest].max() <= sel.scores[chosen].min()
        assert np.all(np.diff(sel.scores[chosen]) <= 0)  # best first
    # guards: exact counts of the defined rows, lowest / highest base losses
    defined = np.isfinite(sel.scores)
    m = int(defined.sum())
    easy_rows = [i for i, why in enumerate(sel.excluded) if why == "easy"]
    hard_rows = [i for i, why in enumerate(sel.excluded) if why == "hard"]
    assert len(easy_rows) == math.floor(round(easy * m, 9)) and len(hard_rows) == math.floor(round(hard * m, 9))
    middle = base[sel.eligible]
    if easy_rows and len(middle):
        assert base[easy_rows].max() <= middle.min()
    if hard_rows and len(middle):
        assert base[hard_rows].min() >= middle.max()


@settings(max_examples=200, deadline=None)
@given(pools(), st.data(), quantiles)
def test_property_quotas_exact_budget_and_respected(pool, data, easy):
    base, ref, groups = pool
    n = data.draw(st.integers(0, len(base)))
    raw = data.draw(st.dictionaries(st.sampled_from("abc"), st.sampled_from([0.0, 0.1, 0.3, 0.5, 1.0, 2.0]), min_size=1))
    assume(sum(raw.values()) > 0 and all(g in groups for g in raw))
    try:
        sel = select_learnable(base, ref, n, easy_quantile=easy, groups=groups, quota=raw)
    except ShedkitError as exc:
        assert "fewer than the budget" in str(exc)
        return
    chosen = sel.selected
    assert len(chosen) == n == len(set(chosen.tolist()))
    labels = np.array(groups)
    shares = parse_quota(raw)
    counts = {g: int((labels[chosen] == g).sum()) for g in "abc"}
    assert counts == {g: sel.group_selected.get(g, 0) for g in "abc"}
    for g in "abc":
        if shares.get(g, 0) == 0:
            assert counts[g] == 0
        else:
            assert counts[g] <= sel.group_eligible[g]
    # proportionality: one rate c (rows per unit of share) fits every group: a group below its
    # eligible rows is within one row of share * c, a group taken whole got no more than that
    active = [g for g in shares if shares[g] > 0]
    below = [g for g in active if counts[g] < sel.group_eligible[g]]
    lo = max((counts[g] - 1) / shares[g] for g in active)
    hi = min(((counts[g] + 1) / shares[g] for g in below), default=math.inf)
    assert lo < hi
    # within each group, the rows chosen are its best eligible rows
    for g in "abc":
        mine = [i for i in chosen if labels[i] == g]
        rest = [i for i in np.flatnonzero(sel.eligible & (labels == g)) if i not in set(mine)]
        if mine and rest:
            assert sel.scores[rest].max() <= sel.scores[mine].min()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=8), st.integers(0, 1000))
def test_property_largest_remainder_sums_exactly(weights, n):
    assume(sum(weights) > 0)
    counts = largest_remainder(dict(enumerate(weights)), n)
    assert sum(counts.values()) == n
    total = sum(weights)
    for k, w in enumerate(weights):
        assert abs(counts[k] - n * w / total) < 1 + 1e-9
