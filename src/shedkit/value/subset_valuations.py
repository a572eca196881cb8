"""Subset-sampling valuations: every evaluation informs every player (maximum sample reuse).

- ``MSRBanzhaf``: subsets uniform on 2^n; β_i = mean v(S ∋ i) − mean v(S ∌ i) (Wang & Jia's
  maximum-sample-reuse Banzhaf). Banzhaf, not Shapley, values: they need not sum to
  v(full) − v(∅).
- ``StratifiedShapley``: the Shapley value as a difference of size-stratified means,
      φ_i = (1/n) Σ_{s=1..n} E[v(S) | |S|=s, i ∈ S] − (1/n) Σ_{s=0..n-1} E[v(S) | |S|=s, i ∉ S],
  (T ∪ {i} with T uniform of size s−1 in N∖{i} is uniform among the size-s sets holding i), so a
  subset of size s sampled uniformly updates one stratum mean of *every* player (as in
  Kolpaczki et al.'s stratified SVARM). Strata 0 and n are v(∅) and v(full); strata 1 and n−1
  are enumerated first (the n singletons and the n leave-one-out sets, 2n evaluations, exact);
  the sizes 2..n−2 are then sampled in a shuffled round-robin.
- ``RegressionShapley``: KernelSHAP with paired sampling: the constrained least-squares
  additive fit to v over kernel-weighted subsets and their complements (consistent, not
  unbiased; efficient by construction).
- ``ControlVariateShapley``: the same with an additive surrogate u(S) = Σ_{i∈S} w_i removed
  first: φ = φ(u) + φ(v − u), where φ(u)_i = w_i, and the stratum means of u are known in
  closed form, so each sample contributes v(S) − u(S) + E[u | stratum]. The surrogate is a
  ridge-regularised linear model of v on membership refitted on the evaluations so far (or
  ``surrogate={player: value}`` given, e.g. first-order row values summed per proxy, with a
  fitted scale and intercept). A sample is always corrected with the surrogate fitted *before* it, so
  each contribution is unbiased for its stratum mean whatever the fit (a martingale), and the
  less v departs from additive, the less variance is left.

Standard errors: per stratum the sample variance over the count (pooled over players while a
player's stratum has fewer than 2 samples), enumerated strata exact (0), summed over strata.
Efficiency holds only in expectation for these estimators. ``MaxPermutations(T)`` means the
evaluations T permutations of plain permutation sampling would cost (T · n samples).
"""

from __future__ import annotations

import time
from typing import Mapping

import numpy as np

from shedkit.errors import ShedkitError
from shedkit.value.estimators import Valuation
from shedkit.value.marginals import GameContext
from shedkit.value.result import ValuationResult, spearman
from shedkit.value.samplers import StratifiedSubsetSampler, UniformSubsetSampler


def _one(subset):
    (value,) = yield [tuple(int(i) for i in subset)]
    return value


class _Strata:
    """Running sums of per-player contributions in/out of each stratum (vectorised)."""

    def __init__(self, n: int, n_strata: int):
        shape = (2, n, n_strata)  # [in=0/out=1, player, stratum]
        self.count = np.zeros(shape)
        self.total = np.zeros(shape)
        self.squares = np.zeros(shape)
        self.base_total = np.zeros(n_strata)  # Σ (v(S) − u(S)) per stratum, for fallbacks
        self.base_count = np.zeros(n_strata)

    def add(self, mask: np.ndarray, stratum: int, y_in: np.ndarray, y_out: np.ndarray,
            base: float) -> None:
        self.base_total[stratum] += base
        self.base_count[stratum] += 1
        for side, members, y in ((0, mask, y_in), (1, ~mask, y_out)):
            self.count[side, members, stratum] += 1
            self.total[side, members, stratum] += y[members]
            self.squares[side, members, stratum] += y[members] ** 2

    def __iadd__(self, other: "_Strata") -> "_Strata":
        self.count += other.count
        self.total += other.total
        self.squares += other.squares
        self.base_total += other.base_total
        self.base_count += other.base_count
        return self

    def means_and_variances(self, exact: np.ndarray, fallback: np.ndarray | None = None):
        """Per [side, player, stratum]: mean and variance of the mean (0 for exactly enumerated
        strata). An empty cell takes ``fallback`` (default: the mean over players of its side
        and stratum); below 2 samples the variance is pooled over players."""
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = self.total / self.count
            pooled_n = self.count.sum(axis=1, keepdims=True)
            pooled_mean = self.total.sum(axis=1, keepdims=True) / pooled_n
            pooled_var = (self.squares.sum(axis=1, keepdims=True) / pooled_n - pooled_mean**2) * (
                pooled_n / np.maximum(pooled_n - 1, 1))
            var = (self.squares / self.count - mean**2) * self.count / np.maximum(self.count - 1, 1)
        if fallback is None:
            fallback = np.broadcast_to(pooled_mean, mean.shape)
        mean = np.where(self.count > 0, mean, fallback)
        var = np.where(self.count >= 2, var, np.broadcast_to(pooled_var, var.shape))
        var_of_mean = np.maximum(var, 0) / np.maximum(self.count, 1)
        var_of_mean = np.where(exact[None, None, :], 0.0, var_of_mean)
        return np.nan_to_num(mean, nan=0.0), np.where(np.isfinite(var_of_mean), var_of_mean, np.inf)


class _RunningState:
    """What every subset valuation's running state counts: samples drawn, utility evaluations
    (and how many were computed, not reused), time since the start, for stopping rules."""

    def __init__(self, n: int, ctx: GameContext):
        self.n_players, self.ctx = n, ctx
        self.n_samples = 0
        self.n_evaluations = 0
        self.n_computed = 0
        self.start = time.monotonic()
        self._cache: dict = {}

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start


class _SubsetState(_RunningState):
    """The running result of a subset valuation: what stopping rules read."""

    def __init__(self, valuation: "SubsetValuation", n: int, ctx: GameContext, n_strata: int):
        super().__init__(n, ctx)
        self.valuation = valuation
        self.halves = (_Strata(n, n_strata), _Strata(n, n_strata))  # even / odd samples
        self.exact = np.zeros(n_strata, dtype=bool)

    @property
    def n_permutations(self) -> int:
        return self.n_samples // max(1, self.n_players)

    def samples_for_permutations(self, permutations: int) -> int:
        return int(permutations) * max(1, self.n_players)

    def add(self, mask, stratum, y_in, y_out, base) -> None:
        self.halves[self.n_samples % 2].add(mask, stratum, y_in, y_out, base)
        self.n_samples += 1
        self._cache.clear()

    def _estimate(self, which: str):
        if which not in self._cache:
            if which == "all":
                strata = _Strata(self.n_players, self.exact.size)
                strata += self.halves[0]
                strata += self.halves[1]
            else:
                strata = self.halves[0 if which == "even" else 1]
            self._cache[which] = self.valuation._combine(strata, self)
        return self._cache[which]

    @property
    def values(self) -> np.ndarray:
        return self._estimate("all")[0]

    @property
    def stderr(self) -> np.ndarray:
        if self.n_samples < 2:
            return np.full(self.n_players, np.inf)
        return self._estimate("all")[1]

    @property
    def counts(self) -> np.ndarray:
        return np.full(self.n_players, self.n_samples, dtype=np.int64)

    def rank_stability(self) -> float:
        """Spearman between the estimates from the even and the odd samples."""
        if self.n_samples < 4:
            return float("nan")
        return spearman(self._estimate("even")[0], self._estimate("odd")[0])


class SubsetValuation(Valuation):
    """Base class: a subset sampler, a contribution rule per sample, and a combination rule."""

    sampler = UniformSubsetSampler()

    def evaluations_per_permutation(self, n):
        return n  # MaxPermutations(T) = T · n samples, the cost of T plain permutations

    def _n_strata(self, n: int) -> int:
        return 1

    def _running_state(self, n, ctx):
        return _SubsetState(self, n, ctx, self._n_strata(n))

    def _stream(self, rng, n, ctx):
        return self.sampler.samples(rng, n)

    def _walks(self, subset, ctx):
        return [_one(subset)]

    def _result(self, state, players, ctx, common):
        return ValuationResult.from_values(
            players, state.values, state.stderr if state.n_samples >= 2 else None, state.counts,
            n_samples=state.n_samples, rank_stability=state.rank_stability(), **common,
        )


class MSRBanzhaf(SubsetValuation):
    """Maximum-sample-reuse Banzhaf values: every sampled subset updates every player's
    "in" or "out" mean; β_i = mean(v | i ∈ S) − mean(v | i ∉ S), standard error
    sqrt(var_in/n_in + var_out/n_out). (∅ and the full set are evaluated for the record but
    are not samples.)"""

    name = "msr"

    def _fold(self, state, subset, outcomes):
        mask = np.zeros(state.n_players, dtype=bool)
        mask[subset] = True
        y = np.full(state.n_players, outcomes[0])
        state.add(mask, 0, y, y, outcomes[0])

    def _combine(self, strata, state):
        mean, var = strata.means_and_variances(state.exact)
        return mean[0, :, 0] - mean[1, :, 0], np.sqrt(var[0, :, 0] + var[1, :, 0])


class StratifiedShapley(SubsetValuation):
    """Shapley values from size-stratified subset samples with full sample reuse (see the
    module doc). ``surrogate`` is only for ``ControlVariateShapley``."""

    name = "stratified"
    sampler = StratifiedSubsetSampler()

    def _n_strata(self, n):
        return n + 1

    def _border(self, n: int) -> list[np.ndarray]:
        """Strata 1 and n−1, enumerated: singletons, then leave-one-out sets (deduplicated)."""
        subsets = [np.array([i]) for i in range(n)]
        if n - 1 > 1:
            subsets += [np.delete(np.arange(n), i) for i in range(n)]
        return subsets

    def _stream(self, rng, n, ctx):
        border = self._border(n)
        self._n_border = len(border)
        yield from border
        yield from self.sampler.samples(rng, n)

    def _running_state(self, n, ctx):
        state = super()._running_state(n, ctx)
        self._surrogate = np.zeros(n)
        return state

    def _fold(self, state, subset, outcomes):
        n = state.n_players
        mask = np.zeros(n, dtype=bool)
        mask[subset] = True
        s = int(mask.sum())
        w = self._surrogate
        total = float(w.sum())
        base = outcomes[0] - float(w[mask].sum())
        rest = total - w
        y_in = base + w + (s - 1) / max(n - 1, 1) * rest
        y_out = base + s / max(n - 1, 1) * rest
        state.add(mask, s, y_in, y_out, base)
        if state.n_samples == self._n_border:
            state.exact[[1, n - 1]] = True
        self._after_fold(state, subset, outcomes[0])

    def _after_fold(self, state, subset, value) -> None:
        """Hook: the control-variate valuation refits its surrogate here."""

    def _fallback(self, strata, n) -> np.ndarray:
        """An empty (side, player, size) cell: the stratum's mean of v − u plus the surrogate's
        exact stratum mean for that player (for plain stratified sampling: the stratum mean)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            base = np.nan_to_num(strata.base_total / strata.base_count)
        w = self._surrogate
        rest = (w.sum() - w)[:, None]
        sizes = np.arange(n + 1)[None, :]
        frac_in = (sizes - 1) / max(n - 1, 1)
        frac_out = sizes / max(n - 1, 1)
        return np.stack([base[None, :] + w[:, None] + frac_in * rest, base[None, :] + frac_out * rest])

    def _combine(self, strata, state):
        n, ctx = state.n_players, state.ctx
        mean, var = strata.means_and_variances(state.exact, self._fallback(strata, n))
        mean_in, mean_out = mean[0].copy(), mean[1].copy()
        var_in, var_out = var[0].copy(), var[1].copy()
        mean_in[:, n], var_in[:, n] = ctx.v_full, 0.0  # stratum n holds every player
        mean_out[:, 0], var_out[:, 0] = ctx.v_empty, 0.0  # stratum 0 holds none
        values = (mean_in[:, 1:].sum(axis=1) - mean_out[:, :n].sum(axis=1)) / n
        stderr = np.sqrt(var_in[:, 1:].sum(axis=1) + var_out[:, :n].sum(axis=1)) / n
        return values, stderr


class ControlVariateShapley(StratifiedShapley):
    """Stratified Shapley with an additive control variate (see the module doc).

    surrogate -- None: a linear model of v on membership, refitted (ridge ``ridge``) on the
                 evaluations so far whenever they have grown by ``refit_growth`` (×);
                 a mapping player id → value g: per-player surrogate values (e.g. first-order
                 row values summed per proxy); w = a·g + b refitted after every sample (scale a
                 and intercept b, with Σw = v(full) − v(∅); ``surrogates.fit_given``) from two
                 running sums, so a refit costs O(n), not O(samples·n).
    """

    name = "cv"

    def __init__(self, surrogate: Mapping[str, float] | None = None, ridge: float = 1e-3,
                 refit_growth: float = 1.25, **kwargs):
        super().__init__(**kwargs)
        if surrogate is not None and not isinstance(surrogate, Mapping):
            raise ShedkitError("surrogate must be a mapping player id -> value (or None for a fitted linear model)")
        if refit_growth <= 1:
            raise ShedkitError("refit_growth must be > 1")
        self.surrogate, self.ridge, self.refit_growth = surrogate, float(ridge), float(refit_growth)

    def params(self):
        return {"surrogate": "given" if self.surrogate is not None else "linear", "ridge": self.ridge}

    def fit(self, utility, players=None, backend=None):
        self._players = tuple(players if players is not None else (getattr(utility, "players", None) or ()))
        if self.surrogate is not None:
            from shedkit.value.surrogates import given_vector

            given_vector(self.surrogate, self._players)  # every player has a value
        return super().fit(utility, players, backend)

    def _running_state(self, n, ctx):
        state = super()._running_state(n, ctx)
        self._masks, self._values = [], []
        self._next_fit = 0
        self._zz = self._zr = 0.0  # a given surrogate's running sums (surrogates.given_weights)
        if self.surrogate is not None:
            from shedkit.value.surrogates import given_vector

            self._given = given_vector(self.surrogate, self._players)
            # A given surrogate is usable from the start, constrained to v(full) − v(∅) (the only
            # evaluations so far; its scale from a prior until a subset informs it, see
            # surrogates.fit_given): before any sample the values rank as the surrogate, so a
            # cheap surrogate (first-order values) ranks the players with no fine-tune at all.
            self._refit(state)
        return state

    def _after_fold(self, state, subset, value):
        mask = np.zeros(state.n_players, dtype=bool)
        mask[subset] = True
        if self.surrogate is not None:
            # two parameters (scale, intercept) from two running sums: refitted after every sample
            from shedkit.value.surrogates import given_informative, given_terms

            total = state.ctx.v_full - state.ctx.v_empty
            z, r = given_terms(mask[None], np.array([value - state.ctx.v_empty]), self._given, total)
            if given_informative(z, self._given)[0]:
                self._zz += float(z[0] * z[0])
                self._zr += float(z[0] * r[0])
            self._refit(state)
            return
        self._masks.append(mask)
        self._values.append(value)
        if state.n_samples >= self._n_border and state.n_samples >= self._next_fit:
            self._refit(state)
            self._next_fit = max(state.n_samples + 1, int(state.n_samples * self.refit_growth))

    def _refit(self, state):
        from shedkit.value.surrogates import fit_additive, given_weights

        n, ctx = state.n_players, state.ctx
        if self.surrogate is not None:
            self._surrogate = given_weights(self._given, ctx.v_full - ctx.v_empty, self._zz, self._zr)
            return
        masks = np.vstack([np.zeros(n, bool), np.ones(n, bool), *self._masks])
        values = np.array([ctx.v_empty, ctx.v_full, *self._values])
        self._surrogate = fit_additive(masks, values, ctx.v_empty, None, self.ridge)


class _RegressionState(_RunningState):
    """Running sums of a constrained least-squares Shapley fit (see ``RegressionShapley``)."""

    def __init__(self, n: int, ctx: GameContext):
        super().__init__(n, ctx)
        self.masks: list[np.ndarray] = []  # per pair: the subset's mask (its complement is ~mask)
        self.pair_values: list[tuple[float, float]] = []  # per pair: v(S) − v(∅), v(N∖S) − v(∅)

    @property
    def n_permutations(self) -> int:
        return 2 * self.n_samples // max(1, self.n_players)

    def samples_for_permutations(self, permutations: int) -> int:
        return -(-int(permutations) * max(1, self.n_players) // 2)

    def add(self, mask: np.ndarray, v_in: float, v_out: float) -> None:
        self.masks.append(mask)
        self.pair_values.append((v_in - self.ctx.v_empty, v_out - self.ctx.v_empty))
        self.n_samples += 1
        self._cache.clear()

    def _fit(self, rows: slice | np.ndarray):
        n, total = self.n_players, self.ctx.v_full - self.ctx.v_empty
        M = np.asarray(self.masks, dtype=float).reshape(-1, n)[rows]
        Y = np.asarray(self.pair_values, dtype=float).reshape(-1, 2)[rows]
        pairs = len(M)
        if pairs == 0:
            return np.full(n, total / n), np.full(n, np.inf)
        Mc = 1.0 - M
        A = (M.T @ M + Mc.T @ Mc) / pairs + 1e-9 * np.eye(n)
        b = (M.T @ Y[:, 0] + Mc.T @ Y[:, 1]) / pairs
        Ainv = np.linalg.pinv(A)
        ones = np.ones(n)
        a1 = Ainv @ ones
        H = Ainv - np.outer(a1, a1) / (ones @ a1)  # solution map under Σφ = v(N) − v(∅)
        phi = H @ b + a1 * total / (ones @ a1)
        if pairs < 2:
            return phi, np.full(n, np.inf)
        U = M * (Y[:, :1] - M @ phi[:, None]) + Mc * (Y[:, 1:] - Mc @ phi[:, None])  # per-pair scores
        cov = np.cov(U, rowvar=False) / pairs
        return phi, np.sqrt(np.maximum(np.diag(H @ cov @ H.T), 0))

    def _estimate(self, which: str):
        if which not in self._cache:
            rows = {"all": slice(None), "even": slice(0, None, 2), "odd": slice(1, None, 2)}[which]
            self._cache[which] = self._fit(rows)
        return self._cache[which]

    @property
    def values(self) -> np.ndarray:
        return self._estimate("all")[0]

    def rank_stability(self) -> float:
        if self.n_samples < 4:
            return float("nan")
        return spearman(self._estimate("even")[0], self._estimate("odd")[0])

    @property
    def stderr(self) -> np.ndarray:
        return self._estimate("all")[1]

    @property
    def counts(self) -> np.ndarray:
        return np.full(self.n_players, 2 * self.n_samples, dtype=np.int64)


class _KernelPairSampler:
    """Subset sizes s ∈ 1..n−1 with probability ∝ 1/(s(n−s)) (the Shapley kernel's size
    marginal), the subset uniform of that size; its complement is evaluated with it."""

    kind = "subset"

    def samples(self, rng, n):
        if n < 2:
            return
        sizes = np.arange(1, n)
        p = 1.0 / (sizes * (n - sizes))
        p /= p.sum()
        while True:
            yield np.sort(rng.choice(n, size=int(rng.choice(sizes, p=p)), replace=False))


class RegressionShapley(SubsetValuation):
    """KernelSHAP-style Shapley values (Lundberg & Lee; paired sampling as Covert & Lee): the
    additive model φ that best fits v(S) − v(∅) ≈ Σ_{i∈S} φ_i in least squares over subsets drawn
    from the Shapley kernel, each with its complement, under Σ φ_i = v(full) − v(∅). Exact for
    additive games and efficient by construction; consistent (not unbiased at a finite sample
    size). Standard errors: the sandwich (delta-method) variance over the pairs."""

    name = "regression"
    sampler = _KernelPairSampler()

    def evaluations_per_permutation(self, n):
        return n

    def _running_state(self, n, ctx):
        return _RegressionState(n, ctx)

    def _walks(self, subset, ctx):
        complement = np.setdiff1d(np.arange(ctx.n), subset)
        return [_one(subset), _one(complement)]

    def _fold(self, state, subset, outcomes):
        mask = np.zeros(state.n_players, dtype=bool)
        mask[subset] = True
        state.add(mask, outcomes[0], outcomes[1])

    def _result(self, state, players, ctx, common):
        return ValuationResult.from_values(
            players, state.values, state.stderr if state.n_samples >= 2 else None, state.counts,
            n_samples=state.n_samples, rank_stability=state.rank_stability(), **common,
        )
