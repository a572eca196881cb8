"""Samplers: which permutations or subsets a valuation looks at, drawn from a seeded stream.

A sampler turns ``np.random.default_rng(seed)`` into an endless stream of *samples*; the t-th
sample depends only on the seed and t, so the same seed gives the same estimate on every
backend. A sample is the unit of independence that standard errors are computed over:

- ``PermutationSampler``: one random permutation per sample;
- ``AntitheticSampler``: a permutation followed by its reverse (one sample = the pair);
- ``UniformSubsetSampler``: one subset, each player in it with probability 1/2 (MSR Banzhaf);
- ``StratifiedSubsetSampler``: one subset whose size cycles through the strata 2..n-2 in a
  shuffled round-robin, uniform among the subsets of that size (stratified Shapley).

Permutation samples feed a marginal rule (``shedkit.value.marginals``); subset samples feed a
subset valuation (``shedkit.value.subset_valuations``).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np


class Sampler:
    """Base class: ``samples(rng, n)`` yields samples forever."""

    kind = "permutation"  # or "subset"
    unit_size = 1  # permutations per sample (permutation samplers)

    def samples(self, rng: np.random.Generator, n: int) -> Iterator:
        raise NotImplementedError

    def __repr__(self) -> str:
        return type(self).__name__ + "()"


class PermutationSampler(Sampler):
    """One uniformly random permutation of the n players per sample (a list of one)."""

    def samples(self, rng, n):
        while True:
            yield [rng.permutation(n)]


class AntitheticSampler(PermutationSampler):
    """A random permutation and its reverse: a player early in one is late in the other, which
    cancels much of the variance that comes from position. One sample = the pair."""

    unit_size = 2

    def samples(self, rng, n):
        while True:
            perm = rng.permutation(n)
            yield [perm, perm[::-1].copy()]


class UniformSubsetSampler(Sampler):
    """Subsets with every player in independently with probability 1/2 (uniform on 2^n)."""

    kind = "subset"

    def samples(self, rng, n):
        while True:
            yield np.flatnonzero(rng.random(n) < 0.5)


class StratifiedSubsetSampler(Sampler):
    """Subsets stratified by size: sizes 2..n-2 in shuffled round-robin, each subset uniform
    among those of its size. (Sizes 0, 1, n-1 and n are enumerated exactly by the valuation.)"""

    kind = "subset"

    def samples(self, rng, n):
        sizes = np.arange(2, n - 1)
        if len(sizes) == 0:
            return
        while True:
            for s in rng.permutation(sizes):
                yield np.sort(rng.choice(n, size=int(s), replace=False))


SAMPLERS = {
    "permutation": PermutationSampler,
    "antithetic": AntitheticSampler,
    "uniform-subset": UniformSubsetSampler,
    "stratified-subset": StratifiedSubsetSampler,
}
