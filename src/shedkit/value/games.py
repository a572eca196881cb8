"""Games with known Shapley values, to test estimators against answers, not against themselves.

- ``AdditiveGame``: v(S) = base + Σ_{i∈S} w_i; φ_i = w_i.
- ``GloveGame``: left and right gloves, v(S) = number of pairs; φ by a hypergeometric formula.
- ``RandomGame``: random Harsanyi dividends d(T) on ≤ 12 players, v(S) = base + Σ_{T⊆S} d(T);
  φ_i = Σ_{T∋i} d(T)/|T|, a closed form independent of the enumeration in ``exact_shapley``.
- ``ProxyLikeGame``: the shape of SHED's real problem (no closed form): proxies of varying
  quality, a few harmful ones, diminishing returns within a topic, deterministic noise per
  subset (a fine-tune with a fixed seed is deterministic but jagged). For benchmarks.

``exact_shapley(utility, players)`` (and ``exact_banzhaf``) solves any utility on few players by
enumerating all 2^n subsets. Every game is a picklable ``Utility`` and also serves as a score function.
"""

from __future__ import annotations

import hashlib
import math
from fractions import Fraction
from typing import Iterable, Mapping, Sequence

import numpy as np

from shedkit.value.utility import Utility, as_subset

MAX_EXACT_PLAYERS = 20


def _names(prefix: str, n: int) -> tuple[str, ...]:
    width = len(str(max(n - 1, 0)))
    return tuple(f"{prefix}{i:0{width}d}" for i in range(n))


class Game(Utility):
    """A utility on a known player set with known exact Shapley values."""

    def __init__(self, players: Sequence[str]):
        super().__init__()
        self.players = tuple(players)
        if len(set(self.players)) != len(self.players):
            raise ValueError("player ids must be distinct")
        self._index = {p: i for i, p in enumerate(self.players)}

    def mask(self, ids: Iterable[str]) -> np.ndarray:
        """Boolean membership vector of a subset, in ``self.players`` order."""
        m = np.zeros(len(self.players), dtype=bool)
        for p in ids:
            m[self._index[p]] = True
        return m

    def exact_values(self) -> dict[str, float]:
        """The exact Shapley values, by the game's own closed form."""
        return exact_shapley(self, self.players)


class AdditiveGame(Game):
    """v(S) = base + Σ_{i∈S} w_i. ``weights``: a sequence (players p0, p1, ...) or id -> weight."""

    def __init__(self, weights: Sequence[float] | Mapping[str, float], base: float = 0.0):
        if isinstance(weights, Mapping):
            players, w = tuple(weights), [weights[p] for p in weights]
        else:
            players, w = _names("p", len(weights)), list(weights)
        super().__init__(players)
        self.weights = np.asarray(w, dtype=float)
        self.base = float(base)

    def evaluate(self, ids):
        return self.base + float(self.weights[self.mask(ids)].sum())

    def exact_values(self):
        return dict(zip(self.players, map(float, self.weights)))


class GloveGame(Game):
    """``n_left`` left gloves L*, ``n_right`` right gloves R*; v(S) = min(#left, #right)."""

    def __init__(self, n_left: int, n_right: int):
        super().__init__(_names("L", n_left) + _names("R", n_right))
        self.n_left, self.n_right = n_left, n_right

    def evaluate(self, ids):
        left = sum(1 for p in ids if p.startswith("L"))
        return float(min(left, len(ids) - left))

    @staticmethod
    def _value_of_one(same: int, other: int) -> Fraction:
        """Shapley value of a glove with ``same`` - 1 gloves of its side and ``other`` opposite.

        Its predecessors in a random order are a uniform s-subset of the n - 1 others, s uniform
        on 0..n-1; it completes a pair exactly when they hold fewer of its side than the other.
        """
        n = same + other
        total = Fraction(0)
        for s in range(n):
            hits = sum(
                math.comb(same - 1, a) * math.comb(other, s - a)
                for a in range(0, min(same - 1, s) + 1)
                if a < s - a
            )
            total += Fraction(hits, math.comb(n - 1, s))
        return total / n

    def exact_values(self):
        left = float(self._value_of_one(self.n_left, self.n_right)) if self.n_left else 0.0
        right = float(self._value_of_one(self.n_right, self.n_left)) if self.n_right else 0.0
        return {p: (left if p.startswith("L") else right) for p in self.players}


class RandomGame(Game):
    """A random game on ``n_players`` (≤ 12) built from random Harsanyi dividends.

    Every non-empty coalition T gets a dividend d(T) ~ N(0, 1/|T|) and v(∅) = ``base`` ~ N(0, 1)
    unless given; v(S) = v(∅) + Σ_{∅≠T⊆S} d(T). Seeded by ``seed`` only.
    """

    def __init__(self, n_players: int, seed: int, base: float | None = None):
        if not 1 <= n_players <= 12:
            raise ValueError("RandomGame takes 1 to 12 players")
        super().__init__(_names("g", n_players))
        rng = np.random.default_rng(seed)
        n = n_players
        sizes = np.array([bin(m).count("1") for m in range(1 << n)])
        dividends = rng.normal(size=1 << n) / np.sqrt(np.maximum(sizes, 1))
        dividends[0] = rng.normal() if base is None else base
        table = dividends.copy()
        for i in range(n):  # zeta transform: table[S] = Σ_{T⊆S} dividends[T]
            bit = 1 << i
            has = (np.arange(1 << n) & bit) != 0
            table[has] += table[np.arange(1 << n)[has] ^ bit]
        self._dividends, self._sizes, self._table = dividends, sizes, table

    def evaluate(self, ids):
        mask = 0
        for p in ids:
            mask |= 1 << self._index[p]
        return float(self._table[mask])

    def exact_values(self):
        out = {}
        masks = np.arange(1 << len(self.players))
        for i, p in enumerate(self.players):
            has = (masks & (1 << i)) != 0
            out[p] = float(np.sum(self._dividends[has] / self._sizes[has]))
        return out


class ProxyLikeGame(Game):
    """A synthetic stand-in for "fine-tune on these proxies, score on the dev set".

    Each proxy has a quality q_i (log-normal; a fraction ``harmful`` of them negative, like
    corrupted rows) and a topic. Helpful proxies of one topic have diminishing returns,
    cap·tanh(Σ q / cap), so they interact; harmful ones add linearly; the total saturates again,
    G·tanh(total / G) with G = ``saturation`` × the best reachable total, so the game has
    interactions of every order (a game with only pairwise interactions would flatter
    antithetic sampling, which is exact on those). Each subset gets deterministic noise of
    scale ``noise`` (a hash of the subset seeds it), as a fine-tune with a fixed seed is
    repeatable but not smooth in its data. No closed form: estimate a reference.
    """

    def __init__(
        self,
        n_players: int,
        seed: int,
        n_topics: int = 6,
        harmful: float = 0.15,
        noise: float = 0.02,
        base: float = -2.0,
        saturation: float = 0.6,
    ):
        super().__init__(_names("x", n_players))
        rng = np.random.default_rng(seed)
        quality = rng.lognormal(mean=-1.0, sigma=0.6, size=n_players)
        bad = rng.random(n_players) < harmful
        self.quality = np.where(bad, -quality, quality)
        self.topic = rng.integers(0, n_topics, size=n_players)
        helpful_mass = np.bincount(self.topic, weights=np.maximum(self.quality, 0), minlength=n_topics)
        self.cap = 0.5 * helpful_mass + 1e-9
        self.ceiling = saturation * float(np.sum(self.cap * np.tanh(helpful_mass / self.cap))) + 1e-9
        self.n_topics, self.noise, self.base, self.seed = n_topics, float(noise), float(base), seed

    def evaluate(self, ids):
        m = self.mask(ids)
        q, topic = self.quality[m], self.topic[m]
        mass = np.bincount(topic, weights=np.maximum(q, 0), minlength=self.n_topics)
        total = float(np.sum(self.cap * np.tanh(mass / self.cap))) + float(q[q < 0].sum())
        value = self.base + self.ceiling * math.tanh(total / self.ceiling)
        if self.noise:
            digest = hashlib.blake2b(
                np.packbits(m).tobytes() + self.seed.to_bytes(8, "little", signed=True), digest_size=16
            ).digest()
            u1 = (int.from_bytes(digest[:8], "little") + 1) / 2.0**64
            u2 = int.from_bytes(digest[8:], "little") / 2.0**64
            value += self.noise * math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)
        return value

    def exact_values(self):
        if len(self.players) > MAX_EXACT_PLAYERS:
            raise ValueError("ProxyLikeGame has no closed form; estimate a reference instead")
        return exact_shapley(self, self.players)


def _all_subset_values(utility, players: Sequence[str] | None, kind: str):
    """(players sorted and distinct, every subset's bit mask 0..2^n-1, v at each mask): the
    enumeration behind the exact values; bit i of a mask is ``players[i]``."""
    if players is None:
        players = getattr(utility, "players", None)
        if players is None:
            raise ValueError("pass the players: this utility does not know its player set")
    players = as_subset(players)  # sorted, distinct
    n = len(players)
    if n > MAX_EXACT_PLAYERS:
        raise ValueError(f"exact {kind} enumerates 2^n subsets; n={n} > {MAX_EXACT_PLAYERS}")
    masks = np.arange(1 << n)
    values = np.array(
        [float(utility(tuple(p for i, p in enumerate(players) if m >> i & 1))) for m in masks]
    )
    return players, masks, values


def exact_shapley(utility, players: Sequence[str] | None = None) -> dict[str, float]:
    """Exact Shapley values of any utility on few players, by enumerating all 2^n subsets.

    φ_i = Σ_{S ⊆ N∖{i}} |S|! (n-|S|-1)! / n! · (v(S ∪ {i}) - v(S)). ``utility`` is any callable
    on an iterable of ids (a ``Utility`` or a score function); 2^n evaluations, n ≤ 20.
    """
    players, masks, values = _all_subset_values(utility, players, "Shapley")
    n = len(players)
    sizes = np.array([bin(m).count("1") for m in masks])
    weight = np.array([math.factorial(s) * math.factorial(n - s - 1) for s in range(n)]) / math.factorial(n)
    out = {}
    for i, p in enumerate(players):
        without = masks[(masks & (1 << i)) == 0]
        gains = values[without | (1 << i)] - values[without]
        out[p] = float(np.sum(weight[sizes[without]] * gains))
    return out


def exact_banzhaf(utility, players: Sequence[str] | None = None) -> dict[str, float]:
    """Exact Banzhaf values by enumeration: β_i = 2^-(n-1) Σ_{S ⊆ N∖{i}} (v(S ∪ {i}) − v(S))."""
    players, masks, values = _all_subset_values(utility, players, "Banzhaf")
    out = {}
    for i, p in enumerate(players):
        without = masks[(masks & (1 << i)) == 0]
        out[p] = float(np.mean(values[without | (1 << i)] - values[without]))
    return out
