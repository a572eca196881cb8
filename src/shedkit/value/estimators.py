"""Permutation-based Shapley estimators behind one interface.

    est = ShedRemoval(removal_k=3, stop=MaxPermutations(20) | MaxEvaluations(400), seed=0)
    result = est.fit(utility, backend="process").result_

Every estimator draws a stream of random permutations from ``np.random.default_rng(seed)``
(the t-th permutation depends only on the seed and t), turns each into the subsets it must
score, evaluates those subsets as independent jobs on a backend, and folds the permutations'
marginal contributions in stream order, checking the stopping rule after each sample. Hence the
same seed gives the same values on every backend and batch size, and a rerun over a warm cache
reproduces a killed run exactly without recomputing anything it finished.

- ``ShedRemoval``: SHED's estimator. From the full set remove ``removal_k`` players at a time in
  permutation order; the group removed at a step shares v(before) − v(after); the last step ends
  at v(∅). With k = 1 it is permutation sampling read backwards, unbiased for Shapley values.
- ``PermutationMonteCarlo``: add players one at a time from ∅; marginal v(S ∪ i) − v(S).
- ``TruncatedMonteCarlo``: the same, but once the running score is within a tolerance of
  v(full) the remaining players get 0 (saves the evaluations of large subsets).
- ``AntitheticMonteCarlo``: each permutation is followed by its reverse; a pair is one sample.
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any, Generator, Iterable, Iterator, Sequence

import numpy as np

from shedkit.errors import ShedkitError
from shedkit.execute.backends import Backend, get_backend
from shedkit.value.result import ValuationResult
from shedkit.value.stopping import MaxPermutations, Progress, StoppingRule
from shedkit.value.utility import FunctionUtility, Utility

Subset = tuple[int, ...]  # sorted player indices
Walk = Generator[list[Subset], list[float], np.ndarray]

DEFAULT_PERMUTATIONS = 10


@dataclass(frozen=True)
class GameContext:
    """What a walk may know besides its permutation."""

    n: int
    v_empty: float
    v_full: float


class PermutationEstimator:
    """Base class: subclasses say how one permutation becomes subsets and marginals.

    stop       -- a ``StoppingRule`` (default: ``MaxPermutations(10)``)
    seed       -- seeds the permutation stream; ``None`` draws a fresh seed and records it
    batch_size -- samples evaluated together; default fills the backend's workers
    progress   -- show a progress bar (rich)

    ``fit`` returns self; the result is in ``result_``. Subclasses implement ``walk(perm, ctx)``:
    a generator that yields lists of subsets to score, receives their values, and returns the
    permutation's marginal vector.
    """

    name = "base"
    unit_size = 1  # permutations per independent sample

    def __init__(
        self,
        stop: StoppingRule | None = None,
        seed: int | None = None,
        batch_size: int | None = None,
        progress: bool = False,
    ):
        self.stop = stop
        self.seed = seed
        self.batch_size = batch_size
        self.progress = progress

    # -- what subclasses define --------------------------------------------------------------
    def walk(self, perm: np.ndarray, ctx: GameContext) -> Walk:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """Settings that change the estimate (recorded in the result)."""
        return {}

    def jobs_per_sample(self, n: int) -> int:
        """Independent evaluations one sample offers at once (sizes the default batch)."""
        return self.unit_size * n

    def sample_permutations(self, perm: np.ndarray) -> list[np.ndarray]:
        return [perm]

    # -- the loop ----------------------------------------------------------------------------
    def _stream(self, rng: np.random.Generator, n: int) -> Iterator[list[np.ndarray]]:
        while True:
            yield self.sample_permutations(rng.permutation(n))

    def fit(
        self,
        utility: Utility,
        players: Sequence[str] | None = None,
        backend: "str | Backend | None" = None,
    ) -> "PermutationEstimator":
        """Estimate the values of ``players`` (default: ``utility.players``) under ``utility``."""
        if not isinstance(utility, Utility):
            utility = FunctionUtility(utility)
        players = tuple(players if players is not None else (utility.players or ()))
        if not players:
            raise ShedkitError("no players to value: pass players= or a utility that knows them")
        if len(set(players)) != len(players):
            raise ShedkitError("player ids must be distinct (key proxies by record id)")
        stop = self.stop if self.stop is not None else MaxPermutations(DEFAULT_PERMUTATIONS)
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
            self.result_ = self._fit(utility, players, stop, seed, backend)
        finally:
            if owned:
                backend.close()
        return self

    def _fit(self, utility, players, stop, seed, backend) -> ValuationResult:
        run = _Run(self, utility, players, backend)
        start = time.monotonic()
        computed0, reused0 = utility.computed, utility.reused

        v_empty, v_full = run.values([(), tuple(range(len(players)))])
        ctx = GameContext(len(players), v_empty, v_full)
        progress = Progress(len(players), self.unit_size)
        progress.start = start
        rows: list[np.ndarray] = []
        perms: list[np.ndarray] = []
        used: set[Subset] = {(), tuple(range(len(players)))}
        batch = self.batch_size or max(
            1, math.ceil(backend.parallelism / max(1, self.jobs_per_sample(len(players))))
        )
        stream = self._stream(np.random.default_rng(seed), len(players))
        bar = _ProgressBar(self.progress, f"{self.name} Shapley")
        stopped_by: list[str] = stop.reasons(progress)
        try:
            while not stopped_by:
                samples = [next(stream) for _ in range(batch)]
                for sample, (marginals, subsets) in zip(samples, run.samples(samples, ctx)):
                    rows.extend(marginals)
                    perms.extend(sample)
                    used.update(subsets)
                    progress.n_evaluations = len(used)
                    progress.n_computed = utility.computed - computed0
                    progress.add(np.mean(marginals, axis=0))
                    bar.update(stop.completion(progress), progress)
                    stopped_by = stop.reasons(progress)
                    if stopped_by:
                        break
        finally:
            bar.close()
        return ValuationResult(
            players=players,
            marginals=np.array(rows).reshape(-1, len(players)),
            unit_size=self.unit_size,
            permutations=np.array(perms).reshape(-1, len(players)),
            v_empty=v_empty,
            v_full=v_full,
            estimator=self.name,
            params=self.params(),
            seed=seed,
            stopped_by=" | ".join(dict.fromkeys(stopped_by)),
            n_evaluations=len(used),
            n_computed=utility.computed - computed0,
            n_reused=utility.reused - reused0,
            elapsed=time.monotonic() - start,
        )

    def expected_values(self, utility: Utility, players: Sequence[str] | None = None) -> dict[str, float]:
        """The exact mean of this estimator's marginals over all n! permutations (n ≤ 8).

        For the unbiased estimators this is the Shapley value; for SHED with k > 1 and for
        truncated MC it is the quantity they actually converge to.
        """
        if not isinstance(utility, Utility):
            utility = FunctionUtility(utility)
        players = tuple(players if players is not None else utility.players)
        n = len(players)
        if n > 8:
            raise ValueError("expected_values enumerates n! permutations; use n ≤ 8")
        run = _Run(self, utility, players, get_backend(None))
        v_empty, v_full = run.values([(), tuple(range(n))])
        ctx = GameContext(n, v_empty, v_full)
        total = np.zeros(n)
        perms = [np.array(p) for p in itertools.permutations(range(n))]
        for start in range(0, len(perms), 720):
            samples = [[p] for p in perms[start : start + 720]]
            for marginals, _ in run.samples(samples, ctx):
                total += marginals[0]
        return dict(zip(players, map(float, total / len(perms))))


class _Run:
    """Evaluates samples' walks round by round, sharing one memo of subset values."""

    def __init__(self, estimator, utility, players, backend):
        self.estimator, self.utility, self.players, self.backend = estimator, utility, players, backend
        self.memo: dict[Subset, float] = {}

    def values(self, subsets: Sequence[Subset]) -> list[float]:
        missing = list(dict.fromkeys(s for s in subsets if s not in self.memo))
        if missing:
            ids = [tuple(self.players[i] for i in s) for s in missing]
            self.memo.update(zip(missing, self.utility.evaluate_many(ids, self.backend)))
        return [self.memo[s] for s in subsets]

    def samples(self, samples, ctx) -> list[tuple[list[np.ndarray], set[Subset]]]:
        """Drive every walk of every sample to the end; per sample: (marginal rows, subsets)."""
        walks = [(s, self.estimator.walk(p, ctx)) for s, sample in enumerate(samples) for p in sample]
        marginals: dict[int, list[np.ndarray]] = {s: [] for s in range(len(samples))}
        used: list[set[Subset]] = [set() for _ in samples]
        results: dict[int, np.ndarray] = {}
        requests = []
        for s, w in walks:
            try:
                requests.append((s, w, next(w)))
            except StopIteration as done:  # a walk that needs no evaluation (TMC at once)
                results[id(w)] = done.value
        while requests:
            self.values([sub for _, _, req in requests for sub in req])
            nxt = []
            for s, w, req in requests:
                used[s].update(req)
                try:
                    nxt.append((s, w, w.send([self.memo[sub] for sub in req])))
                except StopIteration as done:
                    results[id(w)] = done.value
            requests = nxt
        for s, w in walks:  # keep each sample's permutations in their stream order
            marginals[s].append(results[id(w)])
        return [(marginals[s], used[s]) for s in range(len(samples))]


class ShedRemoval(PermutationEstimator):
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
    """

    name = "shed"

    def __init__(self, removal_k: int = 1, group_credit: str = "split", **kwargs):
        super().__init__(**kwargs)
        if int(removal_k) < 1:
            raise ShedkitError(f"removal_k must be at least 1, got {removal_k}")
        if group_credit not in ("split", "full"):
            raise ShedkitError("group_credit must be 'split' or 'full'")
        self.removal_k, self.group_credit = int(removal_k), group_credit

    def params(self):
        return {"removal_k": self.removal_k, "group_credit": self.group_credit}

    def jobs_per_sample(self, n):
        return math.ceil(n / self.removal_k) + 1

    def walk(self, perm, ctx):
        n, k = len(perm), self.removal_k
        cuts = list(range(0, n, k)) + [n]
        values = yield [tuple(sorted(perm[c:].tolist())) for c in cuts]  # full ... ∅
        marginals = np.zeros(n)
        for j in range(len(cuts) - 1):
            group = perm[cuts[j] : cuts[j + 1]]
            delta = values[j] - values[j + 1]
            marginals[group] = delta / len(group) if self.group_credit == "split" else delta
        return marginals


class PermutationMonteCarlo(PermutationEstimator):
    """Plain permutation sampling: add players in order from ∅; marginal v(S ∪ i) − v(S)."""

    name = "mc"

    def walk(self, perm, ctx):
        n = len(perm)
        values = yield [tuple(sorted(perm[:j].tolist())) for j in range(n + 1)]
        marginals = np.zeros(n)
        marginals[perm] = np.diff(values)
        return marginals


class AntitheticMonteCarlo(PermutationMonteCarlo):
    """Permutation sampling with each permutation followed by its reverse (one sample = a pair).

    A player early in one is late in the other, which cancels much of the variance that comes
    from position; standard errors are computed over pair means.
    """

    name = "antithetic"
    unit_size = 2

    def sample_permutations(self, perm):
        return [perm, perm[::-1].copy()]


class TruncatedMonteCarlo(PermutationEstimator):
    """Permutation sampling that stops a permutation early (Ghorbani & Zou's TMC-Shapley).

    Players are added from ∅; once the running score v(S) is within ``tolerance`` of v(full),
    every remaining player gets marginal 0. ``tolerance`` defaults to
    ``rtol · |v(full) − v(∅)|``. Efficiency holds approximately: a permutation's marginals sum
    to v(S_stop) − v(∅), which differs from v(full) − v(∅) by at most the tolerance. The
    evaluations run one subset per permutation at a time, so parallelism comes from
    evaluating ``batch_size`` permutations side by side.
    """

    name = "tmc"

    def __init__(self, rtol: float = 0.05, tolerance: float | None = None, **kwargs):
        super().__init__(**kwargs)
        if tolerance is None and not rtol >= 0:
            raise ShedkitError("rtol must be non-negative")
        self.rtol, self.tolerance = float(rtol), tolerance

    def params(self):
        return {"rtol": self.rtol, "tolerance": self.tolerance}

    def jobs_per_sample(self, n):
        return 1

    def threshold(self, ctx: GameContext) -> float:
        if self.tolerance is not None:
            return float(self.tolerance)
        return self.rtol * abs(ctx.v_full - ctx.v_empty)

    def walk(self, perm, ctx):
        tol = self.threshold(ctx)
        marginals = np.zeros(len(perm))
        current = ctx.v_empty
        for j in range(len(perm)):
            if abs(current - ctx.v_full) <= tol:
                break
            (value,) = yield [tuple(sorted(perm[: j + 1].tolist()))]
            marginals[perm[j]] = value - current
            current = value
        return marginals


ESTIMATORS: dict[str, type[PermutationEstimator]] = {
    "shed": ShedRemoval,
    "mc": PermutationMonteCarlo,
    "tmc": TruncatedMonteCarlo,
    "antithetic": AntitheticMonteCarlo,
}


def make_estimator(name: str, **params: Any) -> PermutationEstimator:
    """An estimator by name (``shed``, ``mc``, ``tmc``, ``antithetic``); ``params`` go to its
    constructor (``removal_k`` for shed, ``rtol``/``tolerance`` for tmc; ``stop``, ``seed``,
    ``batch_size``, ``progress`` for all). ``None`` values mean "the default"."""
    from shedkit.value.registry import lookup

    cls = lookup(ESTIMATORS, name, "estimator")
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


class _ProgressBar:
    """A rich progress bar driven by the stopping rule's completion estimate (or nothing)."""

    def __init__(self, enabled: bool, label: str):
        self._bar = None
        if enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
            )
            self._task = self._bar.add_task(label, total=1.0, info="")
            self._bar.start()

    def update(self, completion: float, progress: Progress) -> None:
        if self._bar is not None:
            info = f"{progress.n_permutations} permutations, {progress.n_evaluations} evaluations"
            self._bar.update(self._task, completed=completion, info=info)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
