"""cluster_records / ClusteringResult: the whole stage on hashed n-grams, save and load."""

from __future__ import annotations

import numpy as np
import pytest

from shedkit.cluster import ClusteringResult, cluster_embeddings, cluster_records
from shedkit.data.records import Turn, make_record
from shedkit.errors import ShedkitError

TOPICS = ["bake bread flour yeast oven", "python list function code loop", "planet orbit star telescope"]


def topic_records(per=12):
    records = []
    for t, words in enumerate(TOPICS):
        for j in range(per):
            text = f"{words} question {j}" + " detail" * (j % 3)
            records.append(make_record(len(records), [Turn("user", text), Turn("assistant", f"{words} answer")], {}))
    return records


def test_cluster_records_on_hashed_ngrams(tmp_path):
    records = topic_records()
    result = cluster_records(records, n_clusters=3, embedder="hashed-ngrams", cache_dir=tmp_path,
                             backend="sklearn", progress=False)
    assert result.embeddings.shape == (36, 1024)
    assert result.n_clusters == 3 and result.sizes.sum() == 36
    np.testing.assert_array_equal(result.sizes, np.bincount(result.labels))
    assert np.all(result.labels[result.proxies] == np.arange(3))
    assert result.is_proxy.sum() == 3
    topic = np.repeat(np.arange(3), 12)
    assert len(set(zip(topic.tolist(), result.labels.tolist()))) == 3  # one cluster per topic
    assert result.info["embedder"].startswith("hashed-ngrams") and result.info["backend"] == "sklearn"


def test_default_k_is_sqrt_n():
    X = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    assert cluster_embeddings(X, backend="sklearn").n_clusters == 7


def test_bad_k_is_a_user_error():
    X = np.zeros((5, 2), dtype=np.float32)
    with pytest.raises(ShedkitError, match="between 1 and the pool size 5"):
        cluster_embeddings(X, n_clusters=6)
    with pytest.raises(ShedkitError):
        cluster_embeddings(np.zeros((0, 2), dtype=np.float32))


def test_save_and_load_round_trip(tmp_path):
    records = topic_records(5)
    ids = [r.id for r in records]
    result = cluster_records(records, n_clusters=3, embedder="hashed-ngrams", backend="sklearn", progress=False)
    result.save(tmp_path / "c", ids=ids)
    assert (tmp_path / "c" / "clusters.csv").read_text().splitlines()[0] == "id,cluster,is_proxy"
    loaded = ClusteringResult.load(tmp_path / "c", ids=ids)
    for name in ("labels", "centers", "proxies", "sizes", "embeddings"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(result, name))
    assert loaded.info["n_clusters"] == 3
    with pytest.raises(ShedkitError, match="different pool"):
        ClusteringResult.load(tmp_path / "c", ids=ids[::-1])
    with pytest.raises(ShedkitError, match="no complete clustering"):
        ClusteringResult.load(tmp_path / "nothing")
    result.save(tmp_path / "d", with_embeddings=False)
    assert ClusteringResult.load(tmp_path / "d").embeddings is None
