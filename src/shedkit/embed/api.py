"""embed_records: the one entry point other stages use (cache + batching + progress)."""

from __future__ import annotations

import hashlib
import os
from typing import Sequence

import numpy as np

from shedkit.embed.base import Embedder
from shedkit.embed.cache import EmbeddingCache
from shedkit.embed.hashed import HashedNgramEmbedder
from shedkit.embed.sentence import DEFAULT_MODEL, MINILM_HUB_ID, SentenceTransformerEmbedder
from shedkit.errors import ShedkitError
from shedkit.util.defaults import HASHED_EMBEDDER
from shedkit.util.progress import progress_bar
from shedkit.util.registry import close_match

HASHED_ALIAS = HASHED_EMBEDDER
ALIASES = (DEFAULT_MODEL, HASHED_ALIAS)
#: newly embedded rows are written to the cache every this many rows, so a stopped run resumes
CHECKPOINT_ROWS = 4096


def get_embedder(embedder: str | Embedder = DEFAULT_MODEL, device: str | None = None) -> Embedder:
    """An Embedder from an alias, a hub id or a local model directory (or pass one through).

    ``"hashed-ngrams"`` is the model-free hashed n-gram embedder; ``"all-MiniLM-L6-v2"`` the
    default sentence-transformer; any other string is a sentence-transformers model id or
    path. A near-miss of an alias (``"hashed-ngram"``) fails with a "did you mean" hint.
    """
    if isinstance(embedder, Embedder):
        return embedder
    if not isinstance(embedder, str) or not embedder.strip():
        raise ShedkitError(f"embedder must be a non-empty name or path, got {embedder!r}")
    if embedder == HASHED_ALIAS:
        return HashedNgramEmbedder()
    if embedder in (DEFAULT_MODEL, MINILM_HUB_ID) or os.path.isdir(os.path.expanduser(embedder)):
        return SentenceTransformerEmbedder(embedder, device=device)
    close = close_match(embedder, ALIASES, cutoff=0.8)
    if close:
        raise ShedkitError(
            f"unknown embedder '{embedder}' (did you mean '{close}'?); use an alias "
            f"({', '.join(ALIASES)}), a sentence-transformers model id or a local model directory"
        )
    return SentenceTransformerEmbedder(embedder, device=device)


def text_key(text: str) -> str:
    """Cache key for a bare text (records use their own content-hash id instead)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def embed_texts(
    texts: Sequence[str],
    keys: Sequence[str] | None = None,
    embedder: str | Embedder = DEFAULT_MODEL,
    cache_dir: str | os.PathLike | None = None,
    device: str | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> np.ndarray:
    """Embed ``texts`` -> (N, d) float32 unit rows, caching by ``keys`` (default: text hash).

    Rows whose key is cached are not embedded again; duplicate keys are embedded once. The
    texts still to embed are sorted by length (longest first, as sentence-transformers does)
    so batches waste little padding, and checkpointed to the cache every CHECKPOINT_ROWS.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    keys = [text_key(t) for t in texts] if keys is None else list(keys)
    if len(keys) != len(texts):
        raise ValueError(f"{len(keys)} keys for {len(texts)} texts")
    model = get_embedder(embedder, device=device)
    first: dict[str, int] = {}  # key -> position of its first text
    for pos, key in enumerate(keys):
        first.setdefault(key, pos)
    cache = EmbeddingCache(cache_dir, model.identity) if cache_dir is not None else None
    found = cache.get(first) if cache is not None else {}
    todo = sorted((k for k in first if k not in found), key=lambda k: -model.length_key(texts[first[k]]))
    if todo:
        found.update(_embed_missing(model, todo, [texts[first[k]] for k in todo], cache, batch_size, progress))
    if not keys:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)


def embed_records(
    records: Sequence,
    embedder: str | Embedder = DEFAULT_MODEL,
    cache_dir: str | os.PathLike | None = None,
    device: str | None = None,
    batch_size: int = 64,
    progress: bool = True,
    include_system: bool = False,
) -> np.ndarray:
    """Embed each record's ``embedding_text`` -> (N, d) float32, L2-normalised rows, in
    ``records`` order. System prompts are left out unless ``include_system`` (a long system
    prompt shared by many rows would dominate their embeddings and so the clustering).

    With ``cache_dir`` vectors are cached under ``cache_dir/embeddings/`` by embedder identity
    and record id: an unchanged pool is served without loading the model, and a grown pool
    embeds only its new rows. ``device``: None/"auto" (cuda, then mps, then cpu), or any torch
    device string. An empty pool gives a (0, 0) array.
    """
    return embed_texts(
        [r.embedding_text(include_system) for r in records],
        keys=[r.embedding_key(include_system) for r in records],
        embedder=embedder,
        cache_dir=cache_dir,
        device=device,
        batch_size=batch_size,
        progress=progress,
    )


def _embed_missing(model, keys, texts, cache, batch_size, progress) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    pending_keys: list[str] = []
    pending: list[np.ndarray] = []
    with progress_bar(len(texts), f"embedding with {model.name}", enabled=progress) as advance:
        for start in range(0, len(texts), batch_size):
            vectors = model.encode(texts[start : start + batch_size], batch_size=batch_size)
            batch_keys = keys[start : start + batch_size]
            out.update(zip(batch_keys, vectors))
            pending_keys.extend(batch_keys)
            pending.append(vectors)
            if cache is not None and len(pending_keys) >= CHECKPOINT_ROWS:
                cache.add(pending_keys, np.concatenate(pending))
                pending_keys, pending = [], []
            advance(len(batch_keys))
    if cache is not None and pending_keys:
        cache.add(pending_keys, np.concatenate(pending))
    return out
