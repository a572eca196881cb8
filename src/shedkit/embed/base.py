"""The Embedder interface: texts in, float32 L2-normalised rows out.

An embedder is identified by ``identity``, a string that changes whenever its output would
change (model, dimension, pooling, normalisation, ...). The cache keys vectors by that identity
and the record id, so two embedders with the same identity must produce the same vectors.
"""

from __future__ import annotations

import abc
from typing import Sequence

import numpy as np


class Embedder(abc.ABC):
    """Maps a batch of texts to an (N, d) float32 array of unit-norm rows."""

    #: short name for messages and manifests ("all-MiniLM-L6-v2", "hashed-ngrams")
    name: str = "embedder"

    @property
    @abc.abstractmethod
    def identity(self) -> str:
        """A string that determines the output exactly; the cache key prefix."""

    @abc.abstractmethod
    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed ``texts`` (in order) into an (len(texts), d) float32 array of unit-norm rows.

        ``batch_size`` is a hint; embedders without batching ignore it. Implementations do no
        caching and show no progress: :func:`shedkit.embed.embed_records` does both.
        """

    def length_key(self, text: str) -> int:
        """Sort key used to group texts of similar cost into the same batch (less padding)."""
        return len(text)


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm, as float32 (rows of norm 0 stay 0)."""
    vectors = np.array(vectors, dtype=np.float32)  # a copy: never normalise the caller's array
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    np.divide(vectors, norms, out=vectors, where=norms > 0)
    return vectors


def resolve_device(device: str | None) -> str:
    """``None``/"auto" -> "cuda" when available, else "mps" when available, else "cpu".

    Imports torch: call only from embedders that need it.
    """
    from shedkit.models.device import device_name  # one rule for embeddings and models

    return device_name(device)
