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
safe: shard names are content hashes and any shard is a valid subset of the cache.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from pathlib import Path
from typing import Iterable, Sequence

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

    def load(self) -> dict[str, np.ndarray]:
        """Every cached vector of this identity: id -> (d,) float32 row."""
        found: dict[str, np.ndarray] = {}
        dim = None
        for vec_path in self.shards():
            ids_path = vec_path.with_name(vec_path.name[: -len(VECTORS_SUFFIX)] + IDS_SUFFIX)
            try:
                ids = np.load(ids_path, allow_pickle=False)
                vectors = np.load(vec_path, allow_pickle=False)
            except FileNotFoundError:  # merged away by a concurrent writer: its rows live on
                continue
            except (ValueError, OSError) as exc:
                warnings.warn(f"ignoring unreadable embedding cache shard {vec_path}: {exc}", stacklevel=2)
                continue
            if vectors.ndim != 2 or len(ids) != len(vectors) or (dim is not None and vectors.shape[1] != dim):
                warnings.warn(f"ignoring inconsistent embedding cache shard {vec_path}", stacklevel=2)
                continue
            dim = vectors.shape[1]
            found.update(zip(ids.tolist(), vectors.astype(np.float32, copy=False)))
        return found

    def get(self, ids: Iterable[str]) -> dict[str, np.ndarray]:
        """The cached vectors among ``ids`` (missing ids are simply absent)."""
        wanted = set(ids)
        if not wanted:
            return {}
        return {k: v for k, v in self.load().items() if k in wanted}

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Store ``vectors[i]`` under ``ids[i]`` as one new shard (atomically)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        if len(ids) == 0:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        identity_file = self.dir / "identity.txt"
        if not identity_file.exists():
            atomic_write_text(identity_file, self.identity + "\n")
        self._write_shard(list(ids), vectors)
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
