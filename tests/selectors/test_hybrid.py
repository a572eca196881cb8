"""shed-hybrid's selector: random order is SHED's sampling row for row; best-first inside
clusters; exact budget; clusters short of eligible rows pass the rest on; why rows were left out."""

import numpy as np
import pytest

from shedkit.selectors.hybrid import hybrid_select
from shedkit.selectors.samplers import default_temperature, qocs_sample, qwcs_sample

LABELS = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 0, 0, 2, 1, 1, 0, 2, 3, 3])
VALUES = {0: 0.5, 1: 2.0, 2: -1.0, 3: 1.0}


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("n", [1, 5, 9, 13, 20])
def test_random_order_is_shed_row_for_row(seed, n):
    a = hybrid_select(LABELS, VALUES, n, seed, sampler="qocs")
    assert a.selected.tolist() == qocs_sample(LABELS, VALUES, n, seed).tolist()
    b = hybrid_select(LABELS, VALUES, n, seed, sampler="qwcs")
    tau = default_temperature(list(VALUES.values()))
    assert b.selected.tolist() == qwcs_sample(LABELS, VALUES, n, seed, temperature=tau).tolist()
    assert b.temperature == tau


def test_qocs_best_first_and_pass_on():
    scores = np.arange(len(LABELS), dtype=float)  # later rows score higher
    # cluster 1 (best) has rows 1,4,7,10,14,15: 6 rows; then cluster 3 (2 rows), then cluster 0
    sel = hybrid_select(LABELS, VALUES, 7, 0, sampler="qocs", row_scores=scores)
    assert sorted(sel.selected.tolist()) == [1, 4, 7, 10, 14, 15, 19]  # cluster 3's best: row 19
    assert sel.allocation == {0: 0, 1: 6, 2: 0, 3: 1}
    assert sel.left_out[18] == "below-allocation" and sel.left_out[0] == "cluster-not-reached"
    # row_keep 0.5: cluster 1 gives its best 3 rows, passes 3 on to cluster 3 (best 1) then cluster 0
    sel = hybrid_select(LABELS, VALUES, 7, 0, sampler="qocs", row_scores=scores, row_keep=0.5)
    assert sel.selected.tolist() == [15, 14, 10, 19, 16, 12, 11]
    assert sel.left_out[1] == "below-row-keep" and sel.left_out[18] == "below-row-keep"
    # undefined scores are never taken
    s2 = scores.copy()
    s2[[15, 14]] = np.nan
    sel = hybrid_select(LABELS, VALUES, 4, 0, sampler="qocs", row_scores=s2)
    assert sel.selected.tolist() == [10, 7, 4, 1] and sel.left_out[15] == "no-score"


def test_qwcs_best_first_exact_budget_and_too_few_rows():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=len(LABELS))
    for n in range(1, 21):
        sel = hybrid_select(LABELS, VALUES, n, 3, sampler="qwcs", row_scores=scores)
        assert len(set(sel.selected.tolist())) == n
        for c, k in sel.allocation.items():  # inside each cluster: its k best rows
            rows = np.flatnonzero(LABELS == c)
            best = rows[np.argsort(-scores[rows], kind="stable")][:k]
            assert sorted(best.tolist()) == sorted(r for r in sel.selected.tolist() if LABELS[r] == c)
        assert sum(1 for w in sel.left_out if w == "") == n
    with pytest.raises(ValueError, match="eligible"):
        hybrid_select(LABELS, VALUES, 12, 0, sampler="qwcs", row_scores=scores, row_keep=0.5)
    with pytest.raises(ValueError, match="row score"):
        hybrid_select(LABELS, VALUES, 3, 0, row_keep=0.5)


@pytest.mark.parametrize("sampler", ["qocs", "qwcs"])
def test_random_row_order_samples_uniformly_among_the_kept_rows(sampler):
    """row_order="random": rows come only from each cluster's kept (best row_keep) share, the
    budget is exact, a seed reproduces the draw, and every kept row of a cluster is equally
    likely (the score filters, it does not rank)."""
    labels = np.repeat(np.arange(3), 20)
    values = {0: 1.0, 1: 0.5, 2: -0.5}
    scores = np.tile(np.arange(20, dtype=float), 3)  # within a cluster: rows 10..19 kept at 0.5
    kept = np.flatnonzero(scores >= 10)
    hits = np.zeros(len(labels))
    for seed in range(400):
        sel = hybrid_select(labels, values, 12, seed, sampler=sampler, row_scores=scores, row_keep=0.5,
                            row_order="random")
        assert len(set(sel.selected.tolist())) == 12 and set(sel.selected.tolist()) <= set(kept.tolist())
        assert sel.eligible.sum() == 30 and all(sel.left_out[i] == "below-row-keep" for i in range(10))
        hits[sel.selected] += 1
    again = hybrid_select(labels, values, 12, 5, sampler=sampler, row_scores=scores, row_keep=0.5, row_order="random")
    assert again.selected.tolist() == hybrid_select(labels, values, 12, 5, sampler=sampler, row_scores=scores,
                                                    row_keep=0.5, row_order="random").selected.tolist()
    best = hybrid_select(labels, values, 12, 5, sampler=sampler, row_scores=scores, row_keep=0.5)
    assert sorted(again.selected.tolist()) != sorted(best.selected.tolist())  # not the best-first rows
    for c in range(3):  # within a cluster the kept rows are hit alike (binomial spread, 400 draws)
        h = hits[(labels == c) & (scores >= 10)]
        if h.sum() > 400:
            assert h.max() - h.min() < 6 * np.sqrt(h.mean()) + 1
    if sampler == "qocs":  # QOCS takes its best cluster first: 10 kept rows, then 2 of the next
        assert hits[labels == 0].sum() == 400 * 10 and hits[labels == 1].sum() == 400 * 2


def test_row_order_is_checked():
    with pytest.raises(ValueError, match="row_order"):
        hybrid_select(LABELS, VALUES, 3, 0, row_scores=np.ones(len(LABELS)), row_order="worst")
