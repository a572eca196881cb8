"""--method shed-hybrid on the tiny model: random row order reproduces shed-qocs/shed-qwcs row
for row; first-order rows best-first inside clusters; scores.csv says why rows were left out;
SHED --cluster-value first-order."""

import csv
import json

import numpy as np
import pytest

import shedkit
from shedkit.data.synthetic import write_demo_data

SETTINGS = dict(model="tiny-random", embedder="hashed-ngrams", clusters=5, max_length=64, precision="fp32",
                progress=False, lora_r=4, batch_size=4, fo_warmup=8, fo_checkpoints=1)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("hybrid-data")
    paths = write_demo_data(d, n=50, seed=4, dev_rows=6)
    paths["values"] = d / "values.csv"
    paths["values"].write_text("cluster,value\n0,0.3\n1,-0.2\n2,0.9\n3,0.1\n4,0.5\n")
    return paths


def read(out):
    return list(csv.DictReader(open(out / "scores.csv"))), json.loads((out / "manifest.json").read_text())


@pytest.mark.parametrize("sampler", ["qocs", "qwcs"])
@pytest.mark.parametrize("seed", [0, 3])
def test_random_row_score_is_shed_row_for_row(tmp_path, data, sampler, seed):
    common = dict(budget=13, seed=seed, values=data["values"], cache_dir=tmp_path / "cache", **SETTINGS)
    shed = shedkit.select(data["pool"], method=f"shed-{sampler}", out=tmp_path / "shed", **common)
    hybrid = shedkit.select(data["pool"], method="shed-hybrid", sampler=sampler, row_score="random",
                            out=tmp_path / "hybrid", **common)
    assert hybrid.rows == shed.rows and len(hybrid.rows) == 13
    assert (tmp_path / "shed" / "subset.jsonl").read_bytes() == (tmp_path / "hybrid" / "subset.jsonl").read_bytes()


def test_first_order_cluster_values_random_rows_is_shed_with_first_order_values(tmp_path, data):
    common = dict(budget=11, seed=2, target=[data["target_dev"]], cluster_value="first-order",
                  cache_dir=tmp_path / "cache", **SETTINGS)
    shed = shedkit.select(data["pool"], method="shed-qwcs", out=tmp_path / "s", **common)
    hybrid = shedkit.select(data["pool"], method="shed-hybrid", sampler="qwcs", row_score="random",
                            out=tmp_path / "h", **common)
    assert hybrid.rows == shed.rows
    scores, manifest = read(tmp_path / "h")
    assert manifest["method"]["first_order"]["row_gradients_computed"] == 0  # SHED's run computed them
    fo = np.array([float(r["first_order"]) for r in scores])
    labels = np.array([int(r["cluster"]) for r in scores])
    for r in scores:  # each cluster's value is the sum of its rows' values
        assert float(r["cluster_value"]) == pytest.approx(fo[labels == int(r["cluster"])].sum())


@pytest.mark.parametrize("sampler", ["qocs", "qwcs"])
def test_first_order_rows_best_first_inside_clusters(tmp_path, data, sampler):
    sel = shedkit.select(data["pool"], method="shed-hybrid", sampler=sampler, budget=12, seed=1,
                         target=[data["target_dev"]], values=data["values"], row_keep=0.5,
                         cache_dir=tmp_path / "cache", out=tmp_path / "o", **SETTINGS)
    scores, manifest = read(tmp_path / "o")
    assert len(sel.rows) == 12 and sum(r["selected"] == "1" for r in scores) == 12
    assert {"cluster_value", "row_score", "cluster_taken", "left_out", "first_order"} <= set(scores[0])
    labels = np.array([int(r["cluster"]) for r in scores])
    score = np.array([float(r["row_score"]) for r in scores])
    chosen = np.array([r["selected"] == "1" for r in scores])
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        k = int(chosen[rows].sum())
        assert int(scores[rows[0]]["cluster_taken"]) == k
        best = rows[np.lexsort((rows, -score[rows]))][:k]
        assert set(best.tolist()) == set(np.flatnonzero(chosen & (labels == c)).tolist())
    reasons = {r["left_out"] for r in scores if r["selected"] == "0"}
    assert reasons <= {"below-row-keep", "cluster-not-reached", "below-allocation"} and "below-row-keep" in reasons
    assert all(r["left_out"] == "" for r in scores if r["selected"] == "1")
    assert manifest["method"]["selection"]["eligible"] >= 12


@pytest.mark.parametrize("row_score", ["loss", "ifd"])
def test_loss_and_ifd_row_scores(tmp_path, data, row_score):
    sel = shedkit.select(data["pool"], method="shed-hybrid", row_score=row_score, budget=9, values=data["values"],
                         cache_dir=tmp_path / "cache", out=tmp_path / "o", **SETTINGS)
    scores, _ = read(tmp_path / "o")
    col = "loss_base" if row_score == "loss" else "ifd"
    np.testing.assert_allclose([float(r["row_score"]) for r in scores], [-float(r[col]) for r in scores])
    assert len(sel.rows) == 9


def test_bad_options_fail_clearly(tmp_path, data):
    from shedkit.errors import ShedkitError

    with pytest.raises(ShedkitError, match="row-score"):
        shedkit.select(data["pool"], method="shed-hybrid", row_score="best", budget=3, values=data["values"],
                       cache_dir=tmp_path / "c", **SETTINGS)


def test_percentile_ranks():
    from shedkit.selectors.hybrid import percentile_ranks

    out = percentile_ranks([3.0, np.nan, 1.0, 2.0, 2.0])
    np.testing.assert_allclose(out, [1.0, np.nan, 0.25, 0.625, 0.625])
    assert np.isnan(percentile_ranks([np.nan, np.nan])).all()


def test_loss_ifd_filter_with_random_order(tmp_path, data):
    """loss-ifd = minus the larger pool percentile by base loss and by IFD; with row_keep and
    row_order random the selected rows all pass their cluster's filter, not only its best."""
    from shedkit.selectors.hybrid import percentile_ranks

    sel = shedkit.select(data["pool"], method="shed-hybrid", row_score="loss-ifd", row_keep=0.6, row_order="random",
                         budget=10, seed=3, values=data["values"], cache_dir=tmp_path / "cache", out=tmp_path / "o",
                         **SETTINGS)
    scores, manifest = read(tmp_path / "o")
    loss = np.array([float(r["loss_base"]) for r in scores])
    ifd = np.array([float(r["ifd"]) if r["ifd"] not in ("", "nan") else np.nan for r in scores])
    expected = -np.maximum(percentile_ranks(loss), percentile_ranks(ifd))
    got = np.array([float(r["row_score"]) if r["row_score"] not in ("", "nan") else np.nan for r in scores])
    np.testing.assert_allclose(got, expected)
    assert len(sel.rows) == 10 and manifest["method"]["row_order"] == "random"
    assert all(r["left_out"] != "below-row-keep" for r in scores if r["selected"] == "1")
    with pytest.raises(shedkit.ShedkitError, match="row-order random"):
        shedkit.select(data["pool"], method="shed-hybrid", row_score="loss", row_order="random", budget=10,
                       values=data["values"], cache_dir=tmp_path / "cache", out=tmp_path / "o2", **SETTINGS)


def test_filtered_random_is_uniform_among_the_rows_that_pass(tmp_path, data):
    """filtered-random: every selected row passes the loss/IFD filter (the best filter_keep share
    by loss_ifd_score), the draw is seeded, and too strict a filter is a clear error."""
    from shedkit.selectors.hybrid import loss_ifd_score

    common = dict(budget=12, cache_dir=tmp_path / "cache", **{k: v for k, v in SETTINGS.items()
                                                                if k in ("model", "max_length", "precision", "progress")})
    a = shedkit.select(data["pool"], method="filtered-random", seed=1, filter_keep=0.5, out=tmp_path / "a", **common)
    b = shedkit.select(data["pool"], method="filtered-random", seed=1, filter_keep=0.5, out=tmp_path / "b", **common)
    c = shedkit.select(data["pool"], method="filtered-random", seed=2, filter_keep=0.5, out=tmp_path / "c", **common)
    assert a.rows == b.rows and a.rows != c.rows and len(a.rows) == 12
    scores, manifest = read(tmp_path / "a")
    loss = np.array([float(r["loss_base"]) for r in scores])
    ifd = np.array([float(r["ifd"]) if r["ifd"] not in ("", "nan") else np.nan for r in scores])
    score = loss_ifd_score(loss, ifd)
    finite = np.isfinite(score)
    cut = np.sort(score[finite])[::-1][int(np.ceil(0.5 * finite.sum())) - 1]
    chosen = np.array([r["selected"] == "1" for r in scores])
    assert (score[chosen] >= cut).all() and manifest["method"]["passed"] == int(np.ceil(0.5 * finite.sum()))
    assert {r["excluded"] for r in scores if r["selected"] == "1"} == {""}
    assert sum(r["excluded"] == "filtered" for r in scores) == finite.sum() - manifest["method"]["passed"]
    with pytest.raises(shedkit.ShedkitError, match="raise --filter-keep"):
        shedkit.select(data["pool"], method="filtered-random", seed=1, filter_keep=0.1, out=tmp_path / "d", **common)
