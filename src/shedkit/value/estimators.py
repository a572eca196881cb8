"""Valuations behind one interface: a short ``fit`` composes a utility, a sampler, a marginal
rule (with optional truncation) and a stopping rule.

    est = ShedRemoval(removal_k=3, truncation=0.05, stop=MaxPermutations(20) | MaxEvaluations(400), seed=0)
    result = est.fit(utility, backend="process").result_

``Valuation`` is the base: ``fit(utility, players, backend)`` resolves the players, the seed and
the backend, evaluates v(∅) and v(full), and runs the evaluation loop
(``shedkit.value.engine``: one fine-tune is the unit of work, the stopping rule is checked after
each, the progress bar counts fine-tunes with an ETA). Subclasses say what a sample is and how
it is folded. ``PermutationValuation`` = sampler (``PermutationSampler``/``AntitheticSampler``)
+ marginal rule (``AddOne``/``RemoveK``) + truncation; the named estimators are its presets:

- ``ShedRemoval``: SHED's estimator. From the full set remove ``removal_k`` players at a time in
  permutation order; the group removed at a step shares v(before) − v(after); the last step ends
  at v(∅). With k = 1 it is permutation sampling read backwards, unbiased for Shapley values.
- ``PermutationMonteCarlo``: add players one at a time from ∅; marginal v(S ∪ i) − v(S).
- ``TruncatedMonteCarlo``: the same, but once the running score is within a tolerance of
  v(full) the remaining players get 0 (saves the evaluations of large subsets).
- ``AntitheticMonteCarlo``: each permutation is followed by its reverse; a pair is one sample.
Any of them takes ``truncation=`` (a relative tolerance, or a ``Truncation``) and
``antithetic=True``. Subset-sampling valuations (MSR Banzhaf, stratified and control-variate
Shapley) live in ``shedkit.value.subset_valuations``.

The t-th sample depends only on the seed and t, and samples are folded in stream order, so the
same seed gives the same values on every backend, and a rerun over a warm cache reproduces a
killed run exactly without recomputing anything it finished.
"""

from __future__ import annotations

import itertools
import time
import warnings
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from shedkit.errors import ShedkitError
from shedkit.execute.backends import Backend, get_backend
from shedkit.value.engine import EvaluationLoop, ProgressBar
from shedkit.value.marginals import (AbsoluteTruncation, AddOne, GameContext, MarginalRule,
                                     NoTruncation, RelativeTruncation, RemoveK, Truncation)
from shedkit.value.result import ValuationResult
from shedkit.value.samplers import AntitheticSampler, PermutationSampler, Sampler
from shedkit.value.stopping import DEFAULT_PERMUTATIONS, MaxPermutations, Progress, StoppingRule
from shedkit.value.utility import FunctionUtility, Utility

__all__ = [
    "AntitheticMonteCarlo", "GameContext", "PermutationEstimator",
    "PermutationMonteCarlo", "PermutationValuation", "ShedRemoval", "TruncatedMonteCarlo",
    "Valuation", "estimate_values", "make_estimator",
]


class Valuation:
    """Base class of every valuation over a utility.

    stop       -- a ``StoppingRule`` (default: ``MaxPermutations(10)``)
    seed       -- seeds the sample stream; ``None`` draws a fresh seed and records it
    batch_size -- evaluations run at once (default: the backend's workers)
    progress   -- True for a progress bar, or a callable called with the running state after
                  every evaluation

    ``fit`` returns self; the result is in ``result_`` (scikit-learn's contract).
    """

    name = "base"

    def __init__(self, stop: StoppingRule | None = None, seed: int | None = None,
                 batch_size: int | None = None, progress: "bool | Callable" = False):
        self.stop = stop
        self.seed = seed
        self.batch_size = batch_size
        self.progress = progress

    # -- what subclasses define --------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """Settings that change the estimate (recorded in the result)."""
        return {}

    def evaluations_per_permutation(self, n: int) -> float:
        """New evaluations one permutation's worth of samples costs (plans and progress bars)."""
        raise NotImplementedError

    def _running_state(self, n: int, ctx: GameContext):
        raise NotImplementedError

    def _stream(self, rng: np.random.Generator, n: int, ctx: GameContext):
        raise NotImplementedError

    def _walks(self, payload, ctx: GameContext) -> list:
        raise NotImplementedError

    def _fold(self, state, payload, outcomes) -> None:
        raise NotImplementedError

    def _result(self, state, players, ctx, common: dict) -> ValuationResult:
        raise NotImplementedError

    # -- planning ----------------------------------------------------------------------------
    def planned_evaluations(self, n_players: int, stop: StoppingRule | None = None) -> int | None:
        """Evaluations (fine-tunes) a run on ``n_players`` makes at most under ``stop`` (default:
        this valuation's rule); None when only time or quality bounds it."""
        stop = stop if stop is not None else self._stop()
        planned = stop.planned_evaluations(self.evaluations_per_permutation(n_players), 2)
        return None if planned is None else int(np.ceil(planned))

    def _stop(self) -> StoppingRule:
        return self.stop if self.stop is not None else MaxPermutations(DEFAULT_PERMUTATIONS)

    # -- the run -----------------------------------------------------------------------------
    def fit(self, utility: Utility, players: Sequence[str] | None = None,
            backend: "str | Backend | None" = None) -> "Valuation":
        """Estimate the values of ``players`` (default: ``utility.players``) under ``utility``."""
        if not isinstance(utility, Utility):
            utility = FunctionUtility(utility)
        players = tuple(players if players is not None else (utility.players or ()))
        if not players:
            raise ShedkitError("no players to value: pass players= or a utility that knows them")
        if len(set(players)) != len(players):
            raise ShedkitError("player ids must be distinct (key proxies by record id)")
        stop = self._stop()
        if not stop.bounded:
            warnings.warn(
                f"stopping rule {stop} caps neither permutations, evaluations nor time: "
                "the run may go on for long; add MaxPermutations/MaxEvaluations/MaxTime",
                stacklevel=2,
            )
        seed = self.seed if self.seed is not None else int(np.random.SeedSequence().entropy % 2**63)
        owned = not isinstance(backend, Backend)  # built here from a name: closed here
        backend = get_backend(backend)
        try:
            self.result_ = self._run(utility, players, stop, seed, backend)
        finally:
            if owned:
                backend.close()
        return self

    def _run(self, utility, players, stop, seed, backend) -> ValuationResult:
        start = time.monotonic()
        computed0, reused0 = utility.computed, utility.reused
        n = len(players)
        bar = ProgressBar(self.progress is True, f"{self.name} values",
                          self.planned_evaluations(n, stop))
        callback = self.progress if callable(self.progress) else None

        def on_evaluation(state):
            bar.update(state)
            if callback is not None:
                callback(state)

        class _Counts:  # ∅ and the full set are counted before the running state exists
            n_evaluations, n_computed, n_samples = 0, 0, 0

        loop = EvaluationLoop(utility, players, backend, stop, _Counts(), self.batch_size, on_evaluation)
        try:
            v_empty, v_full = loop.evaluate_now([(), tuple(range(n))])
            ctx = GameContext(n, v_empty, v_full)
            state = self._running_state(n, ctx)
            state.start = start
            state.n_evaluations, state.n_computed = loop.progress.n_evaluations, loop.progress.n_computed
            loop.progress = state
            reasons = loop.run(
                self._stream(np.random.default_rng(seed), n, ctx),
                lambda payload: self._walks(payload, ctx),
                lambda payload, outcomes: self._fold(state, payload, outcomes),
            )
            bar.update(state)
        finally:
            bar.close()
        common = dict(
            v_empty=v_empty, v_full=v_full, estimator=self.name, params=self.params(), seed=seed,
            stopped_by=" | ".join(dict.fromkeys(reasons)), n_evaluations=state.n_evaluations,
            n_computed=utility.computed - computed0, n_reused=utility.reused - reused0,
            elapsed=time.monotonic() - start,
        )
        return self._result(state, players, ctx, common)


class PermutationValuation(Valuation):
    """Permutation sampling: sampler + marginal rule + truncation.

    marginal   -- ``AddOne()`` (default) or ``RemoveK(k)``
    sampler    -- ``PermutationSampler()`` (default) or ``AntitheticSampler()``; or pass
                  ``antithetic=True``
    truncation -- None, a relative tolerance (float: ``RelativeTruncation(rtol)``) or a
                  ``Truncation``; works with every marginal rule
    """

    name = "permutation"

    def __init__(self, marginal: MarginalRule | None = None, sampler: Sampler | None = None,
                 truncation: "Truncation | float | None" = None, antithetic: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.marginal = marginal or AddOne()
        self.sampler = sampler or (AntitheticSampler() if antithetic else PermutationSampler())
        if self.sampler.kind != "permutation":
            raise ShedkitError(f"{type(self).__name__} needs a permutation sampler, got {self.sampler}")
        self.truncation = _truncation(truncation)

    @property
    def unit_size(self) -> int:
        return self.sampler.unit_size

    def params(self):
        out = {**self.marginal.params(), **self.truncation.params()}
        if isinstance(self.sampler, AntitheticSampler) and type(self) is not AntitheticMonteCarlo:
            out["antithetic"] = True
        return out

    def evaluations_per_permutation(self, n):
        return self.marginal.evaluations_per_permutation(n)

    def walk(self, perm: np.ndarray, ctx: GameContext):
        return self.marginal.walk(perm, ctx, self.truncation)

    def _running_state(self, n, ctx):
        state = Progress(n, self.unit_size)
        state.rows, state.perms = [], []
        return state

    def _stream(self, rng, n, ctx):
        return self.sampler.samples(rng, n)

    def _walks(self, perms, ctx):
        return [self.walk(p, ctx) for p in perms]

    def _fold(self, state, perms, outcomes):
        state.rows.extend(outcomes)
        state.perms.extend(perms)
        state.add(np.mean(outcomes, axis=0))

    def _result(self, state, players, ctx, common):
        n = len(players)
        return ValuationResult(
            players=players, marginals=np.array(state.rows).reshape(-1, n), unit_size=self.unit_size,
            permutations=np.array(state.perms).reshape(-1, n), **common,
        )

    def expected_values(self, utility: Utility, players: Sequence[str] | None = None) -> dict[str, float]:
        """The exact mean of this estimator's marginals over all n! permutations (n ≤ 8).

        For the unbiased estimators this is the Shapley value; for SHED with k > 1 and for
        truncated walks it is the quantity they actually converge to.
        """
        if not isinstance(utility, Utility):
            utility = FunctionUtility(utility)
        players = tuple(players if players is not None else utility.players)
        n = len(players)
        if n > 8:
            raise ValueError("expected_values enumerates n! permutations; use n ≤ 8")
        memo: dict[tuple[int, ...], float] = {}

        def value(subset):
            if subset not in memo:
                memo[subset] = utility(tuple(players[i] for i in subset))
            return memo[subset]

        ctx = GameContext(n, value(()), value(tuple(range(n))))
        total = np.zeros(n)
        count = 0
        for perm in itertools.permutations(range(n)):
            walk = self.walk(np.array(perm), ctx)
            try:
                request = next(walk)
                while True:
                    request = walk.send([value(s) for s in request])
            except StopIteration as done:
                total += done.value
            count += 1
        return dict(zip(players, map(float, total / count)))


PermutationEstimator = PermutationValuation  # the former name of this base class


def _truncation(truncation) -> Truncation:
    if truncation is None or truncation is False:
        return NoTruncation()
    if isinstance(truncation, Truncation):
        return truncation
    return RelativeTruncation(float(truncation))


class ShedRemoval(PermutationValuation):
    """SHED's removal estimator: remove ``removal_k`` proxies at a time from the full set.

    group_credit -- how the k proxies removed together share Δ = v(before) − v(after):
        "split" (default): each gets Δ / k. The marginals of a permutation then sum to
            v(full) − v(∅) (efficiency), and with k = 1 this is exactly Shapley sampling.
        "full": each gets Δ, SHED's text read literally. Values are then about k times larger
            and a permutation's marginals sum to Σ_groups |group|·Δ ≈ k·(v(full) − v(∅)); when
            k divides the number of players this only rescales the values (same ranking).
    With k > 1 either credit estimates a grouped approximation of the Shapley value (a proxy's
    value is blended with its random group-mates'), not the Shapley value itself:
    ``expected_values`` gives the exact quantity for small games.
    truncation -- stop a walk once v(S) is within the tolerance of v(∅); the proxies still in S
        get 0 (a relative float, or a ``Truncation``).
    """

    name = "shed"

    def __init__(self, removal_k: int = 1, group_credit: str = "split", **kwargs):
        super().__init__(marginal=RemoveK(removal_k, group_credit), **kwargs)

    @property
    def removal_k(self) -> int:
        return self.marginal.k

    @property
    def group_credit(self) -> str:
        return self.marginal.group_credit


class PermutationMonteCarlo(PermutationValuation):
    """Plain permutation sampling: add players in order from ∅; marginal v(S ∪ i) − v(S)."""

    name = "mc"

    def __init__(self, **kwargs):
        super().__init__(marginal=AddOne(), **kwargs)


class AntitheticMonteCarlo(PermutationValuation):
    """Permutation sampling with each permutation followed by its reverse (one sample = a pair).

    A player early in one is late in the other, which cancels much of the variance that comes
    from position; standard errors are computed over pair means.
    """

    name = "antithetic"

    def __init__(self, **kwargs):
        kwargs.pop("antithetic", None)
        super().__init__(marginal=AddOne(), sampler=AntitheticSampler(), **kwargs)


class TruncatedMonteCarlo(PermutationValuation):
    """Permutation sampling that stops a permutation early (Ghorbani & Zou's TMC-Shapley).

    Players are added from ∅; once the running score v(S) is within ``tolerance`` of v(full),
    every remaining player gets marginal 0. ``tolerance`` defaults to
    ``rtol · |v(full) − v(∅)|``. Efficiency holds approximately: a permutation's marginals sum
    to v(S_stop) − v(∅), which differs from v(full) − v(∅) by at most the tolerance. The
    evaluations run one subset per permutation at a time, so parallelism comes from
    evaluating several permutations side by side.
    """

    name = "tmc"

    def __init__(self, rtol: float = 0.05, tolerance: float | None = None, **kwargs):
        truncation = AbsoluteTruncation(tolerance) if tolerance is not None else RelativeTruncation(rtol)
        super().__init__(marginal=AddOne(), truncation=truncation, **kwargs)
        self.rtol, self.tolerance = float(rtol), tolerance

    def params(self):
        out = {"rtol": self.rtol, "tolerance": self.tolerance}
        if isinstance(self.sampler, AntitheticSampler):
            out["antithetic"] = True
        return out

    def threshold(self, ctx: GameContext) -> float:
        return self.truncation.tolerance(ctx)


def make_estimator(name: str, **params: Any) -> Valuation:
    """An estimator by name (``shed``, ``mc``, ``tmc``, ``antithetic``, ``msr``, ``stratified``,
    ``cv``, ``regression``); ``params`` go to its constructor (``removal_k``/``group_credit`` for shed,
    ``rtol``/``tolerance`` for tmc, ``truncation``/``antithetic`` for the permutation ones,
    ``surrogate`` for cv; ``stop``, ``seed``, ``batch_size``, ``progress`` for all), or any other
    name in ``shedkit.value.registry.VALUATIONS``. ``None`` values mean "the default"."""
    from shedkit.value.registry import VALUATIONS, import_object, lookup

    cls = import_object(lookup(VALUATIONS, name, "estimator"))
    params = {k: v for k, v in params.items() if v is not None}
    try:
        return cls(**params)
    except TypeError as exc:
        raise ShedkitError(f"estimator '{name}' does not take these options: {exc}") from None


def estimate_values(
    utility: Utility,
    estimator: str = "shed",
    *,
    players: Iterable[str] | None = None,
    backend: "str | Backend | None" = None,
    **params: Any,
) -> ValuationResult:
    """One call: build the named estimator, fit it, return its ``ValuationResult``."""
    est = make_estimator(estimator, **params)
    return est.fit(utility, players=None if players is None else tuple(players), backend=backend).result_
