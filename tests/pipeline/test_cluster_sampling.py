"""pipeline/cluster_sampling: clustering for a run (resumable) and QOCS/QWCS MethodResults."""

from __future__ import annotations

import numpy as np
import pytest

from shedkit.data.records import Turn, make_record
from shedkit.errors import ShedkitError
from shedkit.pipeline import cluster_sampling as shed_sampling
from shedkit.pipeline.methods.base import MethodContext

TOPICS = ["bake bread flour yeast oven", "python list function code loop", "planet orbit star telescope",
          "piano chord melody rhythm"]


def make_ctx(tmp_path, budget=10, seed=0, **options):
    records = [
        make_record(i, [Turn("user", f"{TOPICS[i % 4]} question {i}"), Turn("assistant", f"{TOPICS[i % 4]} answer")], {})
        for i in range(40)
    ]
    opts = {"embedder": "hashed-ngrams", "clusters": 4, "cluster_backend": "sklearn", **options}
    return MethodContext(records=records, budget=budget, seed=seed, options=opts,
                         run_dir=tmp_path / "run", cache_dir=tmp_path / "cache")


def test_clustering_is_saved_and_reused(tmp_path, monkeypatch):
    ctx = make_ctx(tmp_path)
    first = shed_sampling.clustering_for(ctx, progress=False)
    assert (ctx.run_dir / "work" / "clusters" / "clustering.json").is_file()

    def boom(*a, **k):
        raise AssertionError("re-clustered")

    monkeypatch.setattr(shed_sampling, "cluster_records", boom)
    again = shed_sampling.clustering_for(ctx, progress=False)
    np.testing.assert_array_equal(first.labels, again.labels)
    with pytest.raises(AssertionError, match="re-clustered"):  # other settings: recomputed
        shed_sampling.clustering_for(make_ctx(tmp_path, clusters=5), progress=False)


@pytest.mark.parametrize("sampler", ["qocs", "qwcs"])
def test_sampling_result_columns_and_budget(tmp_path, sampler):
    ctx = make_ctx(tmp_path, budget=13)
    clustering = shed_sampling.clustering_for(ctx, progress=False)
    values = {c: float(c) for c in range(clustering.n_clusters)}
    result = shed_sampling.sampling_result(ctx, clustering, values, sampler)
    assert len(result.selected) == 13 == len(set(result.selected.tolist()))
    assert result.columns["cluster"] == clustering.labels.tolist()
    assert sum(result.columns["is_proxy"]) == clustering.n_clusters
    assert result.columns["value"] == [float(c) for c in clustering.labels]
    assert result.info["sampler"] == sampler and result.info["n_clusters"] == 4
    if sampler == "qocs":  # the best cluster (value 3) is taken whole
        assert set(np.flatnonzero(clustering.labels == 3)) <= set(result.selected.tolist())
    else:
        assert result.info["temperature"] == pytest.approx(np.std([0.0, 1.0, 2.0, 3.0]))
        assert result.info["temperature_source"] == "std of cluster values"


def test_given_temperature_is_recorded(tmp_path):
    ctx = make_ctx(tmp_path, temperature=0.25)
    clustering = shed_sampling.clustering_for(ctx, progress=False)
    result = shed_sampling.sampling_result(ctx, clustering, {c: 0.0 for c in range(4)}, "qwcs")
    assert result.info["temperature"] == 0.25 and result.info["temperature_source"] == "given"


def test_run_from_values_file_and_mismatched_values(tmp_path):
    ctx = make_ctx(tmp_path, values=str(tmp_path / "v.csv"))
    (tmp_path / "v.csv").write_text("cluster,value\n0,0.1\n1,0.4\n2,0.2\n3,0.3\n")
    result = shed_sampling.run_from_values(ctx, "qocs")
    assert len(result.selected) == 10 and result.info["values_file"].endswith("v.csv")
    (tmp_path / "v.csv").write_text("cluster,value\n0,0.1\n1,0.4\n7,0.2\n")
    with pytest.raises(ShedkitError, match="missing clusters \\[2, 3\\]; unknown clusters \\[7\\]"):
        shed_sampling.run_from_values(ctx, "qocs")
    with pytest.raises(ShedkitError, match="needs --values"):
        shed_sampling.run_from_values(make_ctx(tmp_path), "qwcs")
    with pytest.raises(ShedkitError, match="unknown sampler"):
        shed_sampling.run_from_values(ctx, "topk")


def test_values_by_cluster_uses_proxy_ids(tmp_path):
    ctx = make_ctx(tmp_path)
    clustering = shed_sampling.clustering_for(ctx, progress=False)
    proxy_values = {ctx.records[row].id: 10.0 + c for c, row in enumerate(clustering.proxies)}
    assert shed_sampling.values_by_cluster(clustering, ctx.records, proxy_values) == {c: 10.0 + c for c in range(4)}
    with pytest.raises(ShedkitError, match="no value for the proxy"):
        shed_sampling.values_by_cluster(clustering, ctx.records, {})
