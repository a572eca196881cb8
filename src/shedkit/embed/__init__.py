"""Embedders behind one interface, with an on-disk cache keyed by embedder identity and record id.

Importing this package does not import torch: sentence-transformers loads on first use.
"""

from shedkit.embed.api import HASHED_ALIAS, embed_records, embed_texts, get_embedder
from shedkit.embed.base import Embedder, l2_normalise
from shedkit.embed.cache import EmbeddingCache
from shedkit.embed.hashed import HashedNgramEmbedder
from shedkit.embed.sentence import DEFAULT_MODEL, SentenceTransformerEmbedder

DEFAULT_EMBEDDER = DEFAULT_MODEL

__all__ = [
    "DEFAULT_EMBEDDER",
    "HASHED_ALIAS",
    "Embedder",
    "EmbeddingCache",
    "HashedNgramEmbedder",
    "SentenceTransformerEmbedder",
    "embed_records",
    "embed_texts",
    "get_embedder",
    "l2_normalise",
]
