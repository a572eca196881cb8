"""embed_records: order, dedup, and the on-disk cache (hit without a model call, grow by new rows)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from shedkit.data.records import Turn, make_record
from shedkit.embed import Embedder, EmbeddingCache, HashedNgramEmbedder, embed_records, embed_texts
from shedkit.embed.base import l2_normalise
from shedkit.embed.sentence import SentenceTransformerEmbedder


def rec(i: int, text: str | None = None):
    return make_record(i, [Turn("user", text or f"question number {i}"), Turn("assistant", f"answer {i * 7}")], {})


class CountingEmbedder(Embedder):
    """Deterministic fake: a vector from the text's hash; counts every text it embeds."""

    name = "counting"

    def __init__(self, dim: int = 8):
        self.dim, self.seen, self.calls = dim, [], 0

    @property
    def identity(self) -> str:
        return f"counting-d{self.dim}"

    def encode(self, texts, batch_size=64):
        self.calls += 1
        self.seen.extend(texts)
        rows = [np.random.default_rng(abs(hash(t)) % 2**32).normal(size=self.dim) for t in texts]
        return l2_normalise(np.array(rows))


class Forbidden(CountingEmbedder):
    def encode(self, texts, batch_size=64):
        raise AssertionError(f"model called on {len(texts)} texts: the cache should have served them")


def test_shape_dtype_order_and_unit_rows():
    records = [rec(i) for i in range(10)]
    emb = CountingEmbedder()
    X = embed_records(records, embedder=emb, progress=False, batch_size=3)
    assert X.shape == (10, 8) and X.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-5)
    # row i is the embedding of record i's text, whatever the internal length-sorted batching did
    np.testing.assert_allclose(X, CountingEmbedder().encode([r.text for r in records]), rtol=1e-6)


def test_duplicate_records_embedded_once():
    records = [rec(0), rec(1), rec(0, None), rec(1)]
    emb = CountingEmbedder()
    X = embed_records(records, embedder=emb, progress=False)
    assert len(emb.seen) == 2
    np.testing.assert_array_equal(X[0], X[2])


def test_second_run_hits_cache_without_model_call(tmp_path):
    records = [rec(i) for i in range(20)]
    first = embed_records(records, embedder=CountingEmbedder(), cache_dir=tmp_path, progress=False)
    again = embed_records(records, embedder=Forbidden(), cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(first, again)
    shuffled = records[::-1]
    np.testing.assert_array_equal(embed_records(shuffled, embedder=Forbidden(), cache_dir=tmp_path, progress=False),
                                  first[::-1])


def test_adding_rows_embeds_only_new_ones(tmp_path):
    old = [rec(i) for i in range(15)]
    embed_records(old, embedder=CountingEmbedder(), cache_dir=tmp_path, progress=False)
    new = [rec(i) for i in range(15, 20)]
    emb = CountingEmbedder()
    X = embed_records(old + new, embedder=emb, cache_dir=tmp_path, progress=False)
    assert sorted(emb.seen) == sorted(r.text for r in new)
    assert X.shape == (20, 8)


def test_cache_keyed_by_identity(tmp_path):
    records = [rec(i) for i in range(5)]
    embed_records(records, embedder=CountingEmbedder(dim=8), cache_dir=tmp_path, progress=False)
    other = CountingEmbedder(dim=4)
    assert embed_records(records, embedder=other, cache_dir=tmp_path, progress=False).shape == (5, 4)
    assert len(other.seen) == 5


def test_cache_files_are_plain_npy_and_atomic(tmp_path):
    records = [rec(i) for i in range(5)]
    embed_records(records, embedder=CountingEmbedder(), cache_dir=tmp_path, progress=False)
    files = list((tmp_path / "embeddings").rglob("*"))
    assert not [f for f in files if f.name.endswith(".tmp")]
    npys = [f for f in files if f.suffix == ".npy"]
    assert len(npys) == 2
    for f in npys:
        np.load(f, allow_pickle=False)  # raises if anything needed pickle


def test_compaction_keeps_every_row(tmp_path):
    cache = EmbeddingCache(tmp_path, "x", max_shards=2)
    for i in range(5):
        cache.add([f"id{i}"], np.full((1, 3), float(i), dtype=np.float32))
    assert len(cache.shards()) <= 2
    got = cache.load()
    assert sorted(got) == [f"id{i}" for i in range(5)]
    assert got["id3"].tolist() == [3.0, 3.0, 3.0]


def test_unreadable_shard_is_ignored_and_recomputed(tmp_path):
    records = [rec(i) for i in range(4)]
    embed_records(records, embedder=CountingEmbedder(), cache_dir=tmp_path, progress=False)
    for f in (tmp_path / "embeddings").rglob("*.vectors.npy"):
        f.write_bytes(b"not a numpy file")
    emb = CountingEmbedder()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        embed_records(records, embedder=emb, cache_dir=tmp_path, progress=False)
    assert len(emb.seen) == 4
    assert any("unreadable" in str(w.message) for w in caught)


def test_checkpoints_while_embedding(tmp_path, monkeypatch):
    import shedkit.embed.api as api

    monkeypatch.setattr(api, "CHECKPOINT_ROWS", 4)
    records = [rec(i) for i in range(10)]
    embed_records(records, embedder=CountingEmbedder(), cache_dir=tmp_path, progress=False, batch_size=2)
    assert len(list((tmp_path / "embeddings").rglob("*.vectors.npy"))) == 3  # 4 + 4 + 2 rows


def test_sentence_transformer_cache_hit_never_loads_the_model(tmp_path, monkeypatch):
    records = [rec(i) for i in range(3)]
    identity = SentenceTransformerEmbedder().identity
    vectors = l2_normalise(np.eye(3, 384, dtype=np.float32) + 0.1)
    EmbeddingCache(tmp_path, identity).add([r.id for r in records], vectors)

    def boom(self):
        raise AssertionError("model loaded on a cache hit")

    monkeypatch.setattr(SentenceTransformerEmbedder, "load", boom)
    X = embed_records(records, embedder="all-MiniLM-L6-v2", cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(X, vectors)


def test_hashed_embedder_through_cache(tmp_path, monkeypatch):
    records = [rec(i) for i in range(6)]
    first = embed_records(records, embedder="hashed-ngrams", cache_dir=tmp_path, progress=False)

    def boom(self, texts, batch_size=64):
        raise AssertionError("re-embedded")

    monkeypatch.setattr(HashedNgramEmbedder, "encode", boom)
    np.testing.assert_array_equal(embed_records(records, embedder="hashed-ngrams", cache_dir=tmp_path,
                                                progress=False), first)


def test_progress_bar_and_empty_input():
    X = embed_records([rec(i) for i in range(3)], embedder=CountingEmbedder(), progress=True)
    assert X.shape == (3, 8)
    assert embed_records([], embedder=CountingEmbedder(), progress=False).shape == (0, 0)


def test_embed_texts_default_keys_and_validation(tmp_path):
    X = embed_texts(["a b", "c d", "a b"], embedder=CountingEmbedder(), cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(X[0], X[2])
    with pytest.raises(ValueError):
        embed_texts(["a"], keys=["k1", "k2"], embedder=CountingEmbedder(), progress=False)
    with pytest.raises(ValueError):
        embed_texts(["a"], embedder=CountingEmbedder(), batch_size=0, progress=False)
