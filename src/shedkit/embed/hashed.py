"""A model-free embedder: signed hashed word n-gram counts (alias ``hashed-ngrams``).

Text is lowercased and split into word-punct tokens (runs of word characters, or runs of
other non-space characters), as DSIR does. Every n-gram of ``ngram_range`` is hashed with
CRC-32 into one of ``dim`` buckets with a sign (the feature-hashing trick, so collisions cancel
on average instead of piling up), counts are summed and the row is L2-normalised. A text with
no token at all is embedded as the hash of a reserved ``<empty>`` token, so every row has unit
norm. Fast, deterministic across processes and platforms, and needs no model; it captures
topic and wording, not meaning.
"""

from __future__ import annotations

import re
import zlib
from typing import Sequence

import numpy as np

from shedkit.embed.base import Embedder

TOKEN_RE = re.compile(r"\w+|[^\w\s]+")
EMPTY_TOKEN = "<empty>"


def word_punct_tokens(text: str) -> list[str]:
    """Lowercased word-punct tokens: ``"Hi, you!"`` -> ``["hi", ",", "you", "!"]``."""
    return TOKEN_RE.findall(text.lower())


class HashedNgramEmbedder(Embedder):
    """Signed hashed n-gram counts, L2-normalised; ``dim`` buckets, n-grams of ``ngram_range``."""

    name = "hashed-ngrams"

    def __init__(self, dim: int = 1024, ngram_range: tuple[int, int] = (1, 2)):
        lo, hi = ngram_range
        if not (isinstance(dim, (int, np.integer)) and dim >= 2):
            raise ValueError(f"dim must be an integer >= 2, got {dim!r}")
        if not 1 <= lo <= hi:
            raise ValueError(f"ngram_range must satisfy 1 <= min <= max, got {ngram_range!r}")
        self.dim = int(dim)
        self.ngram_range = (int(lo), int(hi))

    @property
    def identity(self) -> str:
        lo, hi = self.ngram_range
        return f"hashed-ngrams-v1-d{self.dim}-n{lo}-{hi}"

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        memo: dict[str, tuple[int, float]] = {}
        for row, text in enumerate(texts):
            for gram in self._ngrams(text):
                hit = memo.get(gram)
                if hit is None:
                    h = zlib.crc32(gram.encode("utf-8"))
                    hit = memo[gram] = (h % self.dim, 1.0 if h >> 31 else -1.0)
                out[row, hit[0]] += hit[1]
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        if np.any(norms == 0):  # every n-gram cancelled out (rare): fall back to the empty token
            bucket, sign = self._empty_bucket()
            zero = norms[:, 0] == 0
            out[zero] = 0.0
            out[zero, bucket] = sign
            norms[zero] = 1.0
        return out / norms

    def _ngrams(self, text: str) -> list[str]:
        tokens = word_punct_tokens(text) or [EMPTY_TOKEN]
        lo, hi = self.ngram_range
        grams: list[str] = []
        for n in range(lo, hi + 1):
            grams.extend(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
        return grams or [" ".join(tokens)]  # fewer tokens than the shortest n-gram

    def _empty_bucket(self) -> tuple[int, float]:
        h = zlib.crc32(EMPTY_TOKEN.encode("utf-8"))
        return h % self.dim, 1.0 if h >> 31 else -1.0
