"""Marginal rules: how one permutation becomes subsets to score and per-player marginals.

A rule's ``walk(perm, ctx, truncation)`` is a generator: it yields lists of subsets (sorted
player-index tuples) to score, receives their values, and returns the permutation's marginal
vector. A walk that asks for all its subsets in one list lets them run in parallel; a
truncated walk asks one subset at a time, since whether it goes on depends on the last value.

- ``AddOne``: add players from ∅ in permutation order; player i gets v(S ∪ i) − v(S).
- ``RemoveK``: SHED's removal: from the full set remove ``k`` players at a time; the group
  removed at a step shares v(before) − v(after); the last step ends at v(∅).

Truncation (``RelativeTruncation``/``AbsoluteTruncation``) works with every rule: a walk stops
once its running score is within the tolerance of where the walk ends anyway (v(full) when
adding, v(∅) when removing) and credits the players it did not reach with 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Generator

import numpy as np

from shedkit.errors import ShedkitError

Subset = tuple[int, ...]
Walk = Generator[list[Subset], list[float], np.ndarray]


@dataclass(frozen=True)
class GameContext:
    """What a walk may know besides its permutation."""

    n: int
    v_empty: float
    v_full: float


class Truncation:
    """Never truncates. Subclasses give a tolerance; ``None`` means no truncation."""

    def tolerance(self, ctx: GameContext) -> float | None:
        return None

    def params(self) -> dict:
        return {}

    def __bool__(self) -> bool:
        return True


class NoTruncation(Truncation):
    def __bool__(self) -> bool:
        return False


class RelativeTruncation(Truncation):
    """Tolerance ``rtol · |v(full) − v(∅)|`` (Ghorbani & Zou's TMC uses a few percent)."""

    def __init__(self, rtol: float = 0.05):
        if not rtol >= 0:
            raise ShedkitError("rtol must be non-negative")
        self.rtol = float(rtol)

    def tolerance(self, ctx):
        return self.rtol * abs(ctx.v_full - ctx.v_empty)

    def params(self):
        return {"truncation_rtol": self.rtol}


class AbsoluteTruncation(Truncation):
    """A fixed tolerance in utility units."""

    def __init__(self, tolerance: float):
        if not tolerance >= 0:
            raise ShedkitError("tolerance must be non-negative")
        self.value = float(tolerance)

    def tolerance(self, ctx):
        return self.value

    def params(self):
        return {"truncation_tolerance": self.value}


def _sorted(idx: np.ndarray) -> Subset:
    return tuple(sorted(idx.tolist()))


class MarginalRule:
    """Base class for marginal rules."""

    name = "base"

    def walk(self, perm: np.ndarray, ctx: GameContext, truncation: Truncation) -> Walk:
        raise NotImplementedError

    def evaluations_per_permutation(self, n: int) -> int:
        """New subsets one untruncated permutation needs besides ∅ and the full set."""
        raise NotImplementedError

    def params(self) -> dict:
        return {}


class AddOne(MarginalRule):
    """Add players one at a time from ∅: player perm[j] gets v(perm[:j+1]) − v(perm[:j])."""

    name = "add-one"

    def evaluations_per_permutation(self, n):
        return max(0, n - 1)

    def walk(self, perm, ctx, truncation):
        n = len(perm)
        marginals = np.zeros(n)
        tol = truncation.tolerance(ctx)
        if tol is None:
            values = yield [_sorted(perm[:j]) for j in range(n + 1)]
            marginals[perm] = np.diff(values)
            return marginals
        current = ctx.v_empty
        for j in range(n):
            if abs(current - ctx.v_full) <= tol:
                break
            (value,) = yield [_sorted(perm[: j + 1])]
            marginals[perm[j]] = value - current
            current = value
        return marginals


class RemoveK(MarginalRule):
    """SHED's removal of ``k`` players at a time from the full set.

    group_credit -- "split" (default): the k removed together each get Δ/k, so a
        permutation's marginals sum to v(full) − v(∅); "full": each gets Δ (SHED's wording).
    """

    name = "remove-k"

    def __init__(self, k: int = 1, group_credit: str = "split"):
        if int(k) < 1:
            raise ShedkitError(f"removal_k must be at least 1, got {k}")
        if group_credit not in ("split", "full"):
            raise ShedkitError("group_credit must be 'split' or 'full'")
        self.k, self.group_credit = int(k), group_credit

    def params(self):
        return {"removal_k": self.k, "group_credit": self.group_credit}

    def evaluations_per_permutation(self, n):
        return max(0, math.ceil(n / self.k) - 1)

    def _credit(self, marginals, group, delta):
        marginals[group] = delta / len(group) if self.group_credit == "split" else delta

    def walk(self, perm, ctx, truncation):
        n, k = len(perm), self.k
        cuts = list(range(0, n, k)) + [n]
        marginals = np.zeros(n)
        tol = truncation.tolerance(ctx)
        if tol is None:
            values = yield [_sorted(perm[c:]) for c in cuts]  # full ... ∅
            for j in range(len(cuts) - 1):
                self._credit(marginals, perm[cuts[j] : cuts[j + 1]], values[j] - values[j + 1])
            return marginals
        current = ctx.v_full
        for j in range(len(cuts) - 1):
            if abs(current - ctx.v_empty) <= tol:
                break  # what is left is worth about v(∅): the rest get 0
            if cuts[j + 1] == n:
                value = ctx.v_empty
            else:
                (value,) = yield [_sorted(perm[cuts[j + 1] :])]
            self._credit(marginals, perm[cuts[j] : cuts[j + 1]], current - value)
            current = value
        return marginals
