"""Stopping rules, combinable with ``&`` (all must hold) and ``|`` (any suffices), as in pyDVL.

    stop = MaxPermutations(200) | MaxEvaluations(2_000) | (StandardErrorBelow(0.01) & RankStability(0.9))

A rule reads the running result of a valuation: any object with ``values``, ``stderr``,
``n_samples``, ``n_permutations``, ``n_evaluations``, ``n_computed``, ``elapsed`` and
``rank_stability()`` — the ``Progress`` of a permutation valuation, the running state of a
subset valuation, or a finished ``ValuationResult`` (so ``rule.check(result)`` says whether a
saved result already meets it). The evaluation loop checks the rule after every evaluation
and after every folded sample (see ``shedkit.value.engine``); rules on samples and quality
stop at the same place whatever the backend, ``MaxTime`` does not.

Two more questions a rule answers for the loop: ``evaluation_budget`` (how many more
evaluations may start: ``MaxEvaluations`` is never exceeded) and ``planned_evaluations`` (for
the progress bar and ``--dry-run``).
"""

from __future__ import annotations

import time

import numpy as np

from shedkit.value.result import spearman


class Progress:
    """Running state of a permutation valuation; samples are folded in stream order.

    n_permutations -- permutations folded in so far (2 per antithetic sample)
    n_samples      -- independent samples (permutations, or antithetic pairs)
    n_evaluations  -- distinct subsets the run has evaluated so far (computed or from the
                      cache), updated by the evaluation loop after every evaluation
    n_computed     -- evaluations the utility actually computed during this run
    elapsed        -- seconds since the run started
    """

    def __init__(self, n_players: int, unit_size: int = 1):
        self.n_players, self.unit_size = n_players, unit_size
        self.n_samples = 0
        self.n_evaluations = 0
        self.n_computed = 0
        self.start = time.monotonic()
        self._mean = np.zeros(n_players)
        self._m2 = np.zeros(n_players)
        self._prefix = [np.zeros(n_players)]  # prefix sums of the sample means

    @property
    def n_permutations(self) -> int:
        return self.n_samples * self.unit_size

    def samples_for_permutations(self, permutations: int) -> int:
        """Samples that make up ``permutations`` permutations (antithetic pairs round up)."""
        return -(-int(permutations) // self.unit_size)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def add(self, sample: np.ndarray) -> None:
        """Fold in one sample's per-player marginal (the pair mean for antithetic pairs)."""
        self.n_samples += 1
        delta = sample - self._mean
        self._mean = self._mean + delta / self.n_samples
        self._m2 = self._m2 + delta * (sample - self._mean)
        self._prefix.append(self._prefix[-1] + sample)

    @property
    def values(self) -> np.ndarray:
        return self._mean.copy()

    @property
    def stderr(self) -> np.ndarray:
        if self.n_samples < 2:
            return np.full(self.n_players, np.inf)
        return np.sqrt(self._m2 / (self.n_samples - 1) / self.n_samples)

    def rank_stability(self) -> float:
        """Spearman between the mean of the first and of the second half of the samples."""
        n, half = self.n_samples, self.n_samples // 2
        if half < 2:
            return float("nan")
        first = self._prefix[half] / half
        second = (self._prefix[n] - self._prefix[half]) / (n - half)
        return spearman(first, second)


class StoppingRule:
    """Decides when an estimation is done. Combine with ``&`` and ``|``.

    ``bounded`` says whether the rule is sure to fire eventually (it caps permutations,
    evaluations or time); ``completion`` is a 0..1 guess at progress for progress bars.
    """

    bounded = False

    def check(self, progress: Progress) -> bool:
        raise NotImplementedError

    def completion(self, progress: Progress) -> float:
        return 1.0 if self.check(progress) else 0.0

    def reasons(self, progress: Progress) -> list[str]:
        """The leaf rules that make this rule fire now (for the result's ``stopped_by``)."""
        return [str(self)] if self.check(progress) else []

    def evaluation_budget(self, progress: Progress) -> int | None:
        """How many more evaluations may start before the rule must fire (None: no limit)."""
        return None

    def sample_budget(self, progress: Progress) -> int | None:
        """How many more samples may start before the rule must fire (None: no limit), so
        that a run capped by permutations computes nothing for a sample it will not use."""
        return None

    def planned_evaluations(self, per_permutation: float, fixed: int = 2) -> float | None:
        """Evaluations a run under this rule makes at most (None: bounded by time or quality
        only). ``per_permutation``: new evaluations one permutation costs; ``fixed``: the
        evaluations made before the first sample (∅ and the full set)."""
        return None

    def __and__(self, other: "StoppingRule") -> "StoppingRule":
        return AllOf(self, other)

    def __or__(self, other: "StoppingRule") -> "StoppingRule":
        return AnyOf(self, other)


class AllOf(StoppingRule):
    def __init__(self, *rules: StoppingRule):
        self.rules = rules
        self.bounded = all(r.bounded for r in rules)

    def check(self, progress):
        return all(r.check(progress) for r in self.rules)

    def completion(self, progress):
        return min(r.completion(progress) for r in self.rules)

    def reasons(self, progress):
        return [why for r in self.rules for why in r.reasons(progress)] if self.check(progress) else []

    def evaluation_budget(self, progress):
        budgets = [r.evaluation_budget(progress) for r in self.rules]
        return None if any(b is None for b in budgets) else max(budgets)

    def sample_budget(self, progress):
        budgets = [r.sample_budget(progress) for r in self.rules]
        return None if any(b is None for b in budgets) else max(budgets)

    def planned_evaluations(self, per_permutation, fixed=2):
        plans = [r.planned_evaluations(per_permutation, fixed) for r in self.rules]
        return None if any(p is None for p in plans) else max(plans)

    def __str__(self):
        return "(" + " & ".join(map(str, self.rules)) + ")"


class AnyOf(StoppingRule):
    def __init__(self, *rules: StoppingRule):
        self.rules = rules
        self.bounded = any(r.bounded for r in rules)

    def check(self, progress):
        return any(r.check(progress) for r in self.rules)

    def completion(self, progress):
        return max(r.completion(progress) for r in self.rules)

    def reasons(self, progress):
        return [why for r in self.rules for why in r.reasons(progress)]

    def evaluation_budget(self, progress):
        budgets = [b for r in self.rules if (b := r.evaluation_budget(progress)) is not None]
        return min(budgets) if budgets else None

    def sample_budget(self, progress):
        budgets = [b for r in self.rules if (b := r.sample_budget(progress)) is not None]
        return min(budgets) if budgets else None

    def planned_evaluations(self, per_permutation, fixed=2):
        plans = [p for r in self.rules if (p := r.planned_evaluations(per_permutation, fixed)) is not None]
        return min(plans) if plans else None

    def __str__(self):
        return "(" + " | ".join(map(str, self.rules)) + ")"


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value}")


class MaxPermutations(StoppingRule):
    """Stop after ``n`` permutations (SHED's fixed T). An antithetic pair counts as two."""

    bounded = True

    def __init__(self, n: int):
        _positive("MaxPermutations", n)
        self.n = int(n)

    def check(self, progress):
        return progress.n_permutations >= self.n

    def completion(self, progress):
        return min(1.0, progress.n_permutations / self.n)

    def planned_evaluations(self, per_permutation, fixed=2):
        return fixed + self.n * per_permutation

    def sample_budget(self, progress):
        return max(0, progress.samples_for_permutations(self.n) - progress.n_samples)

    def __str__(self):
        return f"MaxPermutations({self.n})"


class MaxEvaluations(StoppingRule):
    """Stop once the estimate has used ``n`` utility evaluations (fine-tunes).

    count="used" (default) counts distinct subsets the folded permutations needed, whether
    computed now or read from the cache, so a resumed run stops exactly where an uninterrupted
    one would. count="computed" counts only fresh computations in this run (a budget on work
    done now; it depends on what the cache already holds). A batch of permutations evaluated in
    parallel can compute up to one batch beyond the limit; those results stay in the cache.
    """

    bounded = True

    def __init__(self, n: int, count: str = "used"):
        _positive("MaxEvaluations", n)
        if count not in ("used", "computed"):
            raise ValueError("count must be 'used' or 'computed'")
        self.n, self.count = int(n), count

    def _seen(self, progress):
        return progress.n_evaluations if self.count == "used" else progress.n_computed

    def check(self, progress):
        return self._seen(progress) >= self.n

    def completion(self, progress):
        return min(1.0, self._seen(progress) / self.n)

    def evaluation_budget(self, progress):
        return max(0, self.n - self._seen(progress))

    def planned_evaluations(self, per_permutation, fixed=2):
        return self.n

    def __str__(self):
        return f"MaxEvaluations({self.n})" if self.count == "used" else f"MaxEvaluations({self.n}, computed)"


MaxFineTunes = MaxEvaluations


class MaxTime(StoppingRule):
    """Stop after ``seconds`` of wall time, checked after every evaluation (not reproducible).

    Evaluations already running when it fires are waited for: at most one per worker."""

    bounded = True

    def __init__(self, seconds: float):
        _positive("MaxTime", seconds)
        self.seconds = float(seconds)

    def check(self, progress):
        return progress.elapsed >= self.seconds

    def completion(self, progress):
        return min(1.0, progress.elapsed / self.seconds)

    def __str__(self):
        return f"MaxTime({self.seconds:g}s)"


class StandardErrorBelow(StoppingRule):
    """Stop when every player's standard error is ≤ ``threshold`` (after ≥ ``min_samples``)."""

    def __init__(self, threshold: float, min_samples: int = 4):
        _positive("StandardErrorBelow", threshold)
        self.threshold, self.min_samples = float(threshold), max(2, int(min_samples))

    def check(self, progress):
        return progress.n_samples >= self.min_samples and bool(
            np.all(progress.stderr <= self.threshold)
        )

    def completion(self, progress):
        if progress.n_samples < 2:
            return 0.0
        worst = float(np.max(progress.stderr))
        return 1.0 if worst <= self.threshold else min(1.0, (self.threshold / worst) ** 2)

    def __str__(self):
        return f"StandardErrorBelow({self.threshold:g})"


class RankStability(StoppingRule):
    """Stop when the Spearman correlation between the values estimated from the first and the
    second half of the samples reaches ``threshold`` (after ≥ ``min_samples``).

    Each half has half the samples, so this is a conservative view of the whole run's
    stability. Players whose values tie (all zero, say) keep it below 1.
    """

    def __init__(self, threshold: float = 0.9, min_samples: int = 10):
        if not -1 < threshold <= 1:
            raise ValueError("RankStability threshold must be in (-1, 1]")
        self.threshold, self.min_samples = float(threshold), max(4, int(min_samples))

    def check(self, progress):
        if progress.n_samples < self.min_samples:
            return False
        rho = progress.rank_stability()
        return bool(np.isfinite(rho) and rho >= self.threshold)

    def completion(self, progress):
        rho = progress.rank_stability()
        return 0.0 if not np.isfinite(rho) else float(np.clip(rho / self.threshold, 0, 1))

    def __str__(self):
        return f"RankStability({self.threshold:g})"


DEFAULT_PERMUTATIONS = 10
HARD_CAP_PERMUTATIONS = 100


def build_stopping_rule(
    permutations: int | None = None,
    max_evals: int | None = None,
    max_time: float | None = None,
    stderr_threshold: float | None = None,
    rank_stability: float | None = None,
    default_permutations: int = DEFAULT_PERMUTATIONS,
    hard_cap_permutations: int = HARD_CAP_PERMUTATIONS,
) -> StoppingRule:
    """The rule the CLI options describe: stop when any cap is reached (``--permutations``,
    ``--max-evals``, ``--max-time``) or when every given quality target is met
    (``--stderr-threshold`` and ``--rank-stability`` together).

    With no cap and no target, ``MaxPermutations(default_permutations)`` (SHED's fixed T).
    With quality targets but no cap, the run goes on until the targets are met, under a hard
    cap ``MaxPermutations(hard_cap_permutations)`` so that it ends (print it before the run:
    ``describe_stopping``)."""
    caps: list[StoppingRule] = []
    if permutations:
        caps.append(MaxPermutations(permutations))
    if max_evals:
        caps.append(MaxEvaluations(max_evals))
    if max_time:
        caps.append(MaxTime(max_time))
    targets: list[StoppingRule] = []
    if stderr_threshold:
        targets.append(StandardErrorBelow(stderr_threshold))
    if rank_stability:
        targets.append(RankStability(rank_stability))
    target = (targets[0] if len(targets) == 1 else AllOf(*targets)) if targets else None
    if not caps:
        if target is None:
            return MaxPermutations(default_permutations)
        return AnyOf(target, HardCap(hard_cap_permutations))
    rules = caps + ([target] if target is not None else [])
    return rules[0] if len(rules) == 1 else AnyOf(*rules)


class HardCap(MaxPermutations):
    """``MaxPermutations`` added only so that a quality-target run ends; named as such."""

    def __str__(self):
        return f"HardCap({self.n} permutations)"


def describe_stopping(stop: StoppingRule, per_permutation: float, fixed: int = 2) -> str:
    """One line for the log before a run: the rule and the most evaluations it allows."""
    planned = stop.planned_evaluations(per_permutation, fixed)
    cap = "no evaluation cap (time or quality only)" if planned is None else f"at most {int(planned)} evaluations"
    return f"stopping rule {stop}: {cap}"
