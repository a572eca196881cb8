"""The clustering stage of SHED: embed -> k-means -> proxies, with a result that saves itself."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from shedkit.cluster.kmeans import KMeans, default_num_clusters
from shedkit.cluster.proxies import proxy_indices
from shedkit.errors import ShedkitError
from shedkit.util.atomic import atomic_save_npy, atomic_write_bytes
from shedkit.util.defaults import DEFAULT_EMBEDDER

ARRAYS = ("labels", "centers", "proxies", "sizes")
INFO_FILE = "clustering.json"  # written last: its presence marks a complete save


@dataclass
class ClusteringResult:
    embeddings: np.ndarray | None  # (N, d) float32 unit rows (None when loaded without them)
    labels: np.ndarray  # (N,) int64 cluster of each row, every value in range(K) used
    centers: np.ndarray  # (K, d) float32
    proxies: np.ndarray  # (K,) int64 row position of each cluster's proxy
    sizes: np.ndarray  # (K,) int64 members per cluster
    info: dict[str, Any] = field(default_factory=dict)  # embedder, backend, seed, K, inertia, timings

    @property
    def n_clusters(self) -> int:
        return len(self.centers)

    @property
    def is_proxy(self) -> np.ndarray:
        """(N,) bool: whether each row is its cluster's proxy."""
        mask = np.zeros(len(self.labels), dtype=bool)
        mask[self.proxies] = True
        return mask

    def save(self, directory: str | os.PathLike, ids: Sequence[str] | None = None,
             with_embeddings: bool = True) -> Path:
        """Write the arrays (.npy), ``clusters.csv`` (id, cluster, is_proxy) and ``clustering.json``.

        Every file is written atomically and the json last, so a directory with a json is a
        complete save. ``ids`` (the records' ids) are stored so :meth:`load` can check the pool.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / INFO_FILE).unlink(missing_ok=True)
        arrays = {name: getattr(self, name) for name in ARRAYS}
        if with_embeddings and self.embeddings is not None:
            arrays["embeddings"] = self.embeddings
        if ids is not None:
            if len(ids) != len(self.labels):
                raise ValueError(f"{len(ids)} ids for {len(self.labels)} rows")
            arrays["ids"] = np.array(list(ids), dtype=str)
            atomic_write_bytes(out / "clusters.csv", _clusters_csv(ids, self.labels, self.is_proxy))
        for name, array in arrays.items():
            atomic_save_npy(out / f"{name}.npy", array)
        atomic_write_bytes(out / INFO_FILE, json.dumps(self.info, indent=2, sort_keys=True, default=str).encode())
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike, ids: Sequence[str] | None = None) -> "ClusteringResult":
        """Read a :meth:`save`-d result; with ``ids``, check it belongs to the same pool."""
        src = Path(directory)
        if not (src / INFO_FILE).is_file():
            raise ShedkitError(f"{src}: no complete clustering here ({INFO_FILE} missing)")
        arrays = {name: np.load(src / f"{name}.npy", allow_pickle=False) for name in ARRAYS}
        if ids is not None:
            saved = src / "ids.npy"
            if not saved.is_file() or np.load(saved, allow_pickle=False).tolist() != list(ids):
                raise ShedkitError(f"{src}: this clustering was made for a different pool")
        emb_path = src / "embeddings.npy"
        embeddings = np.load(emb_path, allow_pickle=False) if emb_path.is_file() else None
        info = json.loads((src / INFO_FILE).read_text(encoding="utf-8"))
        return cls(embeddings=embeddings, info=info, **arrays)


def cluster_embeddings(embeddings: np.ndarray, n_clusters: int | None = None, seed: int = 0,
                       backend: str = "auto", max_iter: int = 50) -> ClusteringResult:
    """k-means (K = n_clusters or round(sqrt(N))) + proxies on precomputed embeddings."""
    n = len(embeddings)
    if n == 0:
        raise ShedkitError("cannot cluster an empty pool")
    k = default_num_clusters(n) if n_clusters is None else n_clusters
    if not (isinstance(k, (int, np.integer)) and not isinstance(k, bool) and 1 <= k <= n):
        raise ShedkitError(f"the number of clusters must be an integer between 1 and the pool size {n}, got {k!r}")
    t0 = time.perf_counter()
    km = KMeans(int(k), seed=seed, backend=backend, max_iter=max_iter).fit(embeddings)
    proxies = proxy_indices(embeddings, km.labels_, km.centers_)
    info = {
        "n_clusters_requested": int(k),
        "n_clusters": int(km.n_clusters_),
        "backend": km.backend_,
        "seed": int(seed),
        "max_iter": int(max_iter),
        "inertia": km.inertia_,
        "seconds_cluster": time.perf_counter() - t0,
    }
    return ClusteringResult(
        embeddings=embeddings, labels=km.labels_, centers=km.centers_, proxies=proxies,
        sizes=np.bincount(km.labels_, minlength=km.n_clusters_).astype(np.int64), info=info,
    )


def cluster_records(records: Sequence, n_clusters: int | None = None, embedder=DEFAULT_EMBEDDER,
                    cache_dir: str | os.PathLike | None = None, seed: int = 0, backend: str = "auto",
                    device: str | None = None, batch_size: int = 64, max_iter: int = 50,
                    progress: bool = True, include_system: bool = False) -> ClusteringResult:
    """The whole clustering stage: embed the records (cached), k-means, one proxy per cluster.
    System prompts are left out of the embedded text unless ``include_system``."""
    from shedkit.embed import embed_records, get_embedder

    model = get_embedder(embedder, device=device)
    t0 = time.perf_counter()
    embeddings = embed_records(records, embedder=model, cache_dir=cache_dir, batch_size=batch_size,
                               progress=progress, include_system=include_system)
    seconds_embed = time.perf_counter() - t0
    result = cluster_embeddings(embeddings, n_clusters=n_clusters, seed=seed, backend=backend, max_iter=max_iter)
    result.info.update(embedder=model.identity, seconds_embed=seconds_embed)
    return result


def _clusters_csv(ids, labels, is_proxy) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["id", "cluster", "is_proxy"])
    writer.writerows(zip(ids, labels.tolist(), is_proxy.astype(int).tolist()))
    return buf.getvalue().encode("utf-8")
