"""embed_records / embed_texts: the one entry point other stages use (cache + shards +
batching + progress).

The texts whose key is not cached are grouped into shards by windows of ``shard_size``
consecutive input positions (default ``CHECKPOINT_ROWS``; see ``shedkit.execute.shards``).
Within a shard the texts are sorted by length (longest first, as sentence-transformers does)
and embedded ``batch_size`` at a time; each finished shard becomes one cache shard, so a
stopped run (even ``kill -9``) keeps what it finished and a rerun embeds only the shards it had
not, in the same batches: the vectors are the same bit for bit as an uninterrupted run's.

``backend=None`` (default) or the sequential backend runs the shards here with the caller's
embedder. ``backend="process"``/``"ray"`` (or a Backend object) sends each shard as an
:class:`EmbedShard` (an embedder *recipe*: the alias/model name, device and settings, never a
loaded model; plus the shard's keys and texts); a worker builds the embedder once per process,
checks that its identity is the driver's, embeds the shard, writes its cache shard (without
compacting; the driver compacts once at the end) and returns the vectors, which the driver
places in input order. The driver holds the output array and one shard's vectors at a time.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from shedkit.embed.base import Embedder
from shedkit.embed.cache import EmbeddingCache
from shedkit.embed.hashed import HashedNgramEmbedder
from shedkit.embed.sentence import DEFAULT_MODEL, MINILM_HUB_ID, SentenceTransformerEmbedder
from shedkit.errors import ShedkitError
from shedkit.execute.jobs import WorkerMismatchError
from shedkit.execute.shards import check_shard_size, opened_backend, plan_shards, run_shards, runs_inline, shard_delay
from shedkit.util.defaults import HASHED_EMBEDDER
from shedkit.util.progress import progress_bar
from shedkit.util.registry import close_match

HASHED_ALIAS = HASHED_EMBEDDER
ALIASES = (DEFAULT_MODEL, HASHED_ALIAS)
#: default shard size: rows per work shard and per cache shard (a stopped run resumes from there)
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
    *,
    backend: Any = None,
    shard_size: int | None = None,
    stats: dict | None = None,
) -> np.ndarray:
    """Embed ``texts`` -> (N, d) float32 unit rows, caching by ``keys`` (default: text hash).

    Rows whose key is cached are not embedded again; duplicate keys are embedded once.

    backend    -- None (default) or 'sequential': shards run here; 'process', 'ray' or a
                  ``Backend`` (``execute.get_backend(name, workers=...)``): shards run on its
                  workers, each building the embedder itself. A name is created with the
                  backend's defaults and closed on return. Same vectors on every backend.
    shard_size -- rows per shard (default ``CHECKPOINT_ROWS``; see the module doc). The
                  vectors of a sentence-transformer may differ in the last bits between shard
                  sizes (texts are batched within a shard), never between backends.
    stats      -- a dict to fill with ``rows`` (texts), ``unique`` (keys), ``cached`` (unique
                  keys read from the cache), ``computed`` (unique keys embedded now) and
                  ``shards`` (shards run now).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    size = check_shard_size(shard_size, CHECKPOINT_ROWS)
    keys = [text_key(t) for t in texts] if keys is None else list(keys)
    if len(keys) != len(texts):
        raise ValueError(f"{len(keys)} keys for {len(texts)} texts")
    model = get_embedder(embedder, device=device)
    unique: dict[str, int] = {}  # key -> its row in `out` (keys in order of first appearance)
    first_pos: list[int] = []  # input position of each unique key's first text
    inverse = np.empty(len(keys), dtype=np.int64)
    for pos, key in enumerate(keys):
        u = unique.get(key)
        if u is None:
            u = unique[key] = len(first_pos)
            first_pos.append(pos)
        inverse[pos] = u
    cache = EmbeddingCache(cache_dir, model.identity) if cache_dir is not None else None
    out, have = cache.read_into(unique) if cache is not None else (None, np.zeros(len(first_pos), dtype=bool))
    shards = plan_shards([first_pos[u] for u in np.flatnonzero(~have)], size)  # input positions
    if shards:
        out = _run_embed_shards(model, device, keys, texts, shards, unique, out, cache, batch_size, progress, backend)
        if cache is not None:
            cache.compact_if_needed()  # once, here: workers write their shards without compacting
    if stats is not None:
        computed = sum(len(s) for s in shards)
        stats.update(rows=len(keys), unique=len(first_pos), cached=len(first_pos) - computed, computed=computed,
                     shards=len(shards))
    if not keys:
        return np.zeros((0, 0), dtype=np.float32)
    return out if len(first_pos) == len(keys) else out[inverse]


def embed_records(
    records: Sequence,
    embedder: str | Embedder = DEFAULT_MODEL,
    cache_dir: str | os.PathLike | None = None,
    device: str | None = None,
    batch_size: int = 64,
    progress: bool = True,
    include_system: bool = False,
    *,
    backend: Any = None,
    shard_size: int | None = None,
    stats: dict | None = None,
) -> np.ndarray:
    """Embed each record's ``embedding_text`` -> (N, d) float32, L2-normalised rows, in
    ``records`` order. System prompts are left out unless ``include_system`` (a long system
    prompt shared by many rows would dominate their embeddings and so the clustering).

    With ``cache_dir`` vectors are cached under ``cache_dir/embeddings/`` by embedder identity
    and record id: an unchanged pool is served without loading the model, and a grown pool
    embeds only its new rows. ``device``: None/"auto" (cuda, then mps, then cpu), or any torch
    device string. An empty pool gives a (0, 0) array. ``backend``, ``shard_size`` and
    ``stats``: see :func:`embed_texts`.
    """
    return embed_texts(
        [r.embedding_text(include_system) for r in records],
        keys=[r.embedding_key(include_system) for r in records],
        embedder=embedder,
        cache_dir=cache_dir,
        device=device,
        batch_size=batch_size,
        progress=progress,
        backend=backend,
        shard_size=shard_size,
        stats=stats,
    )


@dataclass(frozen=True)
class EmbedShard:
    """One shard's job: picklable, holds no loaded model (see the module doc)."""

    index: int
    keys: tuple[str, ...]
    texts: tuple[str, ...]
    embedder: Any  # a recipe tuple (see ``embedder_recipe``) or a light Embedder object
    identity: str  # the driver's embedder identity, which the worker's must equal
    batch_size: int
    cache_dir: str | None


@dataclass(frozen=True)
class EmbedShardDone:
    index: int
    vectors: np.ndarray  # (len(keys), d) float32, in the shard's key order
    part: str | None  # name of the cache shard's vectors file
    seconds: float


def embedder_recipe(model: Embedder, device: str | None = None) -> Any:
    """What a worker needs to build ``model`` itself: a small tuple for the built-in embedders
    (a sentence-transformer's device resolved here, so workers embed where the driver would);
    another Embedder is shipped as it is (it must pickle, and should load weights lazily)."""
    if isinstance(model, HashedNgramEmbedder):
        return ("hashed-ngrams", model.dim, model.ngram_range)
    if isinstance(model, SentenceTransformerEmbedder):
        from shedkit.embed.base import resolve_device

        return ("sentence-transformers", model.model, resolve_device(model.device or device), model.max_seq_length)
    return model


_WORKER_EMBEDDER: dict[Any, Embedder] = {}  # recipe -> embedder, one kept per process


def embedder_from_recipe(recipe: Any) -> Embedder:
    """The embedder a recipe describes, built once per process (one kept)."""
    if isinstance(recipe, Embedder):
        return recipe
    if recipe not in _WORKER_EMBEDDER:
        kind, *args = recipe
        if kind == "hashed-ngrams":
            made: Embedder = HashedNgramEmbedder(dim=args[0], ngram_range=tuple(args[1]))
        elif kind == "sentence-transformers":
            made = SentenceTransformerEmbedder(args[0], device=args[1], max_seq_length=args[2])
        else:
            raise ShedkitError(f"unknown embedder recipe {recipe!r}")
        _WORKER_EMBEDDER.clear()
        _WORKER_EMBEDDER[recipe] = made
    return _WORKER_EMBEDDER[recipe]


def run_embed_shard(job: EmbedShard) -> EmbedShardDone:
    """A worker's entry point: build the embedder (once per process), check its identity,
    embed the shard, write its cache shard, return the vectors."""
    model = embedder_from_recipe(job.embedder)
    if model.identity != job.identity:
        raise WorkerMismatchError(
            f"an embedding worker refuses its shard: its embedder is {model.identity}, the driver's "
            f"{job.identity} (same shedkit, sentence-transformers and model files are needed on every worker)"
        )
    return _embed_shard(job, model)


def _embed_shard(job: EmbedShard, model: Embedder, advance: Callable[[int], None] | None = None) -> EmbedShardDone:
    start = time.perf_counter()
    order = sorted(range(len(job.texts)), key=lambda j: -model.length_key(job.texts[j]))  # stable
    vectors = None
    for b in range(0, len(order), job.batch_size):
        idx = order[b : b + job.batch_size]
        batch = np.asarray(model.encode([job.texts[j] for j in idx], batch_size=job.batch_size), dtype=np.float32)
        if vectors is None:
            vectors = np.empty((len(order), batch.shape[1]), dtype=np.float32)
        vectors[idx] = batch
        if advance is not None:
            advance(len(idx))
    shard_delay()
    part = None
    if job.cache_dir is not None:
        part = EmbeddingCache(job.cache_dir, job.identity).add(list(job.keys), vectors, compact=False).name
    return EmbedShardDone(job.index, vectors, part, time.perf_counter() - start)


def _run_embed_shards(model, device, keys, texts, shards, unique, out, cache, batch_size, progress,
                      backend) -> np.ndarray:
    """Run the shards (lists of input positions) and place their vectors into ``out``."""
    with opened_backend(backend) as be:
        inline = runs_inline(be)
        recipe = None if inline else embedder_recipe(model, device)
        jobs = [
            EmbedShard(index=k, keys=tuple(keys[p] for p in shard), texts=tuple(texts[p] for p in shard),
                       embedder=recipe, identity=model.identity, batch_size=batch_size,
                       cache_dir=str(cache_dir_of(cache)) if cache is not None else None)
            for k, shard in enumerate(shards)
        ]
        total = sum(len(s) for s in shards)
        where = "" if inline else f", {be.name} backend"
        with progress_bar(total, f"embedding with {model.name}{where}", enabled=progress) as advance:
            local = lambda job: _embed_shard(job, model, advance)  # noqa: E731 - used only inline
            for _, done in run_shards(be, jobs, run_embed_shard, local):
                job = jobs[done.index]
                rows = np.array([unique[k] for k in job.keys], dtype=np.int64)
                if out is None:
                    out = np.empty((len(unique), done.vectors.shape[1]), dtype=np.float32)
                elif done.vectors.shape[1] != out.shape[1]:
                    raise ShedkitError(f"{model.name} gave {done.vectors.shape[1]}-dimensional vectors, but the "
                                       f"cache holds {out.shape[1]}-dimensional ones under the same identity")
                out[rows] = done.vectors
                if cache is not None and (done.part is None or not (cache.dir / done.part).exists()):
                    cache.add(list(job.keys), done.vectors, compact=False)  # the worker's disk is not ours
                if not inline:
                    advance(len(job.keys))
    return out


def cache_dir_of(cache: EmbeddingCache):
    """The cache root a worker opens ``EmbeddingCache`` on (``<root>/embeddings/<slug>``)."""
    return cache.dir.parent.parent
