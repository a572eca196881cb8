"""On-disk embedding cache keyed by (embedder identity, record id). No pickle.

Layout, under the shared cache directory::

    <cache_dir>/embeddings/<slug>-<hash of identity>/
        identity.txt                     the full identity string
        <shard>.ids.npy                  fixed-width unicode array of record ids
        <shard>.vectors.npy              float32 (rows, d), row i belongs to ids[i]

Every file is written to a temporary name and renamed into place (``os.replace``); a shard's
ids are written before its vectors, and a shard counts only once its vectors file exists, so
a reader never sees half a shard. Each batch of newly embedded rows becomes a new shard; when
there are more than ``max_shards`` shards they are merged into one. Concurrent writers are
safe: shard names are content hashes of their ids (two writers of one name write the same
rows), temp names are unique per write, and any shard is a valid subset of the cache.
Sharded runs (``embed_texts(..., backend=...)``) write one cache shard per work shard from the
workers without compacting (``add(..., compact=False)``); the driver compacts once at the end.

Reads go shard by shard and keep only the rows asked for (``get``/``read_into``), so looking
up part of a large cache never holds the whole cache in memory.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from shedkit.util.atomic import atomic_save_npy, atomic_write_text

VECTORS_SUFFIX = ".vectors.npy"
IDS_SUFFIX = ".ids.npy"


save_npy_atomic = atomic_save_npy  # the name cluster/stage.py imports


class EmbeddingCache:
    """Vectors of one embedder identity, looked up and added by record id."""

    def __init__(self, cache_dir: str | os.PathLike, identity: str, max_shards: int = 32):
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", identity)[:60].strip("_.")
        digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:12]
        self.identity = identity
        self.dir = Path(cache_dir) / "embeddings" / f"{slug}-{digest}"
        self.max_shards = max_shards

    def shards(self) -> list[Path]:
        """Complete shards (those whose vectors file exists), by name."""
        if not self.dir.is_dir():
            return []
        return sorted(self.dir.glob(f"*{VECTORS_SUFFIX}"))

    def iter_shards(self, mmap: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(ids, vectors)`` of every readable, consistent shard (unreadable or inconsistent
        ones are skipped with a warning; shards merged away meanwhile are skipped silently).
        With ``mmap`` the vectors are memory-mapped (read only the rows you index)."""
        dim = None
        for vec_path in self.shards():
            ids_path = vec_path.with_name(vec_path.name[: -len(VECTORS_SUFFIX)] + IDS_SUFFIX)
            try:
                ids = np.load(ids_path, allow_pickle=False)
                vectors = np.load(vec_path, allow_pickle=False, mmap_mode="r" if mmap else None)
            except FileNotFoundError:  # merged away by a concurrent writer: its rows live on
                continue
            except (ValueError, OSError) as exc:
                warnings.warn(f"ignoring unreadable embedding cache shard {vec_path}: {exc}", stacklevel=3)
                continue
            if vectors.ndim != 2 or len(ids) != len(vectors) or (dim is not None and vectors.shape[1] != dim):
                warnings.warn(f"ignoring inconsistent embedding cache shard {vec_path}", stacklevel=3)
                continue
            dim = vectors.shape[1]
            yield ids, vectors

    def load(self) -> dict[str, np.ndarray]:
        """Every cached vector of this identity: id -> (d,) float32 row."""
        found: dict[str, np.ndarray] = {}
        for ids, vectors in self.iter_shards():
            found.update(zip(ids.tolist(), vectors.astype(np.float32, copy=False)))
        return found

    def get(self, ids: Iterable[str]) -> dict[str, np.ndarray]:
        """The cached vectors among ``ids`` (missing ids are simply absent)."""
        wanted = set(ids)
        if not wanted:
            return {}
        found: dict[str, np.ndarray] = {}
        for shard_ids, vectors in self.iter_shards(mmap=True):
            rows = [j for j, k in enumerate(shard_ids.tolist()) if k in wanted]
            if rows:
                found.update(zip(shard_ids[rows].tolist(), np.array(vectors[rows], dtype=np.float32)))
        return found

    def read_into(self, index: Mapping[str, int], out: np.ndarray | None = None,
                  found: np.ndarray | None = None) -> tuple[np.ndarray | None, np.ndarray]:
        """Copy the cached vector of each key of ``index`` into ``out[index[key]]``.

        ``out`` is allocated (float32, ``(max(index) + 1, d)``) at the first shard that has a
        wanted key when not given. Returns ``(out, found)``, ``found`` a bool mask over the rows
        of ``out`` (None for ``out`` when nothing was cached). Holds one shard's wanted rows at
        a time besides ``out``.
        """
        n = (max(index.values()) + 1) if index else 0
        found = np.zeros(n, dtype=bool) if found is None else found
        for shard_ids, vectors in self.iter_shards(mmap=True):
            pairs = [(j, index[k]) for j, k in enumerate(shard_ids.tolist()) if k in index]
            if not pairs:
                continue
            if out is None:
                out = np.empty((n, vectors.shape[1]), dtype=np.float32)
            elif vectors.shape[1] != out.shape[1]:
                warnings.warn(f"ignoring an embedding cache shard of dimension {vectors.shape[1]} (expected "
                              f"{out.shape[1]}) in {self.dir}", stacklevel=2)
                continue
            src, dst = (np.array(x, dtype=np.int64) for x in zip(*pairs))
            out[dst] = vectors[src]
            found[dst] = True
        return out, found

    def add(self, ids: Sequence[str], vectors: np.ndarray, compact: bool = True) -> Path | None:
        """Store ``vectors[i]`` under ``ids[i]`` as one new shard (atomically); returns the
        shard's vectors file (None for no rows). With ``compact`` (default), merge the shards
        when there are more than ``max_shards``."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        if len(ids) == 0:
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        identity_file = self.dir / "identity.txt"
        if not identity_file.exists():
            atomic_write_text(identity_file, self.identity + "\n")
        path = self._write_shard(list(ids), vectors)
        if compact:
            self.compact_if_needed()
        return path

    def compact_if_needed(self) -> None:
        """``compact()`` when there are more than ``max_shards`` shards."""
        if len(self.shards()) > self.max_shards:
            self.compact()

    def compact(self) -> None:
        """Merge all shards into one (then delete the old ones)."""
        old = self.shards()
        merged = self.load()
        if not merged:
            return
        ids = sorted(merged)
        new = self._write_shard(ids, np.stack([merged[i] for i in ids]))
        for vec_path in old:
            if vec_path == new:
                continue
            ids_path = vec_path.with_name(vec_path.name[: -len(VECTORS_SUFFIX)] + IDS_SUFFIX)
            vec_path.unlink(missing_ok=True)  # vectors first: the shard stops counting at once
            ids_path.unlink(missing_ok=True)

    def _write_shard(self, ids: list[str], vectors: np.ndarray) -> Path:
        name = hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()[:16]
        id_array = np.array(ids, dtype=f"<U{max(1, max(len(i) for i in ids))}")
        save_npy_atomic(self.dir / f"{name}{IDS_SUFFIX}", id_array)
        vec_path = self.dir / f"{name}{VECTORS_SUFFIX}"
        save_npy_atomic(vec_path, vectors)
        return vec_path
