"""The evaluation loop: every utility evaluation (a fine-tune) is the unit of work.

Samples (a permutation's walk, an antithetic pair, one subset) come from a seeded stream. The
loop keeps at most ``in_flight`` evaluations running (the backend's workers), taking the
subsets to score from the earliest unfinished sample first, and after **each** evaluation:
counts it (progress bar: fine-tunes done of planned, with an ETA), advances the walks that were
waiting for it, folds every sample that is complete, in stream order, and checks the stopping
rule. Hence:

- ``MaxEvaluations(n)``: no evaluation is started beyond the budget the rule has left, so a
  run computes at most n (at most n + workers whatever the rule);
- ``MaxPermutations(T)``: no sample beyond the T-th is started, so nothing is computed that
  the estimate will not use;
- ``MaxTime(s)``: the rule is checked after each evaluation; when it fires the loop starts
  nothing new and only waits for those already running: at most one fine-tune per worker;
- a sample is folded only once complete, in stream order. A permutation that a stop cut short
  is **not** used: its marginals would cover only the players it reached, from small (or, when
  removing, large) coalitions, which biases them; its evaluations stay in the utility's cache,
  so a rerun with the same seed reuses them. The estimate is the mean of the first T samples
  of the stream, as unbiased as with a fixed T (up to the usual optional-stopping caveat for
  quality targets). With one worker (or the sequential backend) the stop point is the same
  for any batch size; truncated walks in parallel depend on the number of workers.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Iterator, Sequence

from shedkit.value.marginals import Subset


class _Sample:
    """One sample in flight: its walks, their pending requests and their outcomes."""

    __slots__ = ("payload", "walks", "requests", "outcomes", "open")

    def __init__(self, payload, walks):
        self.payload, self.walks = payload, list(walks)
        self.requests: list[list[Subset] | None] = [None] * len(self.walks)
        self.outcomes: list[Any] = [None] * len(self.walks)
        self.open = len(self.walks)

    def start(self, memo) -> None:
        for w, walk in enumerate(self.walks):
            try:
                self.requests[w] = next(walk)
            except StopIteration as done:
                self._finish(w, done.value)
        self.advance(memo)

    def _finish(self, w, value):
        self.outcomes[w], self.requests[w] = value, None
        self.open -= 1

    def advance(self, memo) -> None:
        """Feed every walk whose whole request is known; stop at the first unknown subset."""
        for w, walk in enumerate(self.walks):
            while self.requests[w] is not None and all(s in memo for s in self.requests[w]):
                try:
                    self.requests[w] = walk.send([memo[s] for s in self.requests[w]])
                except StopIteration as done:
                    self._finish(w, done.value)

    @property
    def complete(self) -> bool:
        return self.open == 0

    def wanted(self, memo) -> Iterator[Subset]:
        for req in self.requests:
            if req is not None:
                for s in req:
                    if s not in memo:
                        yield s


class EvaluationLoop:
    """Runs samples' walks over a utility, one evaluation at a time (see the module doc).

    utility   -- a ``Utility`` (cached or not); ``players`` maps indices to ids
    stop      -- the ``StoppingRule``; it reads ``progress``
    progress  -- the running result (``Progress`` or a subset-valuation state) that ``fold``
                 updates; the loop sets its ``n_evaluations`` and ``n_computed``
    in_flight -- evaluations run at once (default: the backend's parallelism)
    on_evaluation -- called with ``progress`` after every evaluation (progress bars, tests)
    """

    def __init__(self, utility, players: Sequence[str], backend, stop, progress,
                 in_flight: int | None = None, on_evaluation: Callable | None = None):
        self.utility, self.players, self.backend = utility, tuple(players), backend
        self.stop, self.progress = stop, progress
        self.in_flight = max(1, int(in_flight or backend.parallelism))
        self.on_evaluation = on_evaluation
        self.memo: dict[Subset, float] = {}
        self.computed0 = utility.computed
        self.reasons: list[str] = []

    # -- evaluations -------------------------------------------------------------------------
    def _ids(self, subset: Subset) -> tuple[str, ...]:
        return tuple(self.players[i] for i in subset)

    def _record(self, subset: Subset, value: float) -> None:
        self.memo[subset] = value
        self.progress.n_evaluations += 1
        self.progress.n_computed = self.utility.computed - self.computed0
        if self.on_evaluation is not None:
            self.on_evaluation(self.progress)

    def evaluate_now(self, subsets: Sequence[Subset]) -> list[float]:
        """Values of a few subsets (∅, the full set, a warm-up), counted, without stop checks."""
        todo = list(dict.fromkeys(s for s in subsets if s not in self.memo))
        for start in range(0, len(todo), self.in_flight):
            chunk = todo[start : start + self.in_flight]
            for i, value in self.utility.evaluate_iter([self._ids(s) for s in chunk], self.backend):
                self._record(chunk[i], value)
        return [self.memo[s] for s in subsets]

    # -- the loop ----------------------------------------------------------------------------
    def run(self, stream: Iterator, make_walks: Callable, fold: Callable) -> list[str]:
        """Drive samples from ``stream`` until the rule fires; returns the rule's reasons.

        make_walks(payload) -> walk generators of one sample;
        fold(payload, outcomes) folds a complete sample into ``progress`` (stream order).
        """
        active: deque[_Sample] = deque()
        self._exhausted = False
        self.reasons = self.stop.reasons(self.progress)
        while not self.reasons:
            self._fold_ready(active, fold)
            if self.reasons:
                break
            budget = self.stop.evaluation_budget(self.progress)
            limit = self.in_flight if budget is None else min(self.in_flight, max(0, budget))
            chunk = self._collect(active, stream, make_walks, limit)
            if not chunk:
                if limit == 0:  # a budget is spent but its rule did not say so: stop anyway
                    self.reasons = [str(self.stop)]
                elif self._exhausted and not any(not s.complete for s in active):
                    self._fold_ready(active, fold)
                    self.reasons = self.reasons or ["all samples done"]
                continue
            drain = self.backend.parallelism > 1
            for i, value in self.utility.evaluate_iter([self._ids(s) for s in chunk], self.backend):
                self._record(chunk[i], value)
                if self.reasons:
                    continue  # draining: keep (and cache) what is already running, fold nothing
                for sample in active:
                    sample.advance(self.memo)
                self._fold_ready(active, fold)
                if not self.reasons:
                    self.reasons = self.stop.reasons(self.progress)
                if self.reasons and not drain:
                    break
        return self.reasons

    def _collect(self, active, stream, make_walks, limit) -> list[Subset]:
        chunk: dict[Subset, None] = {}
        i = 0
        while len(chunk) < limit:
            if i == len(active):
                if len(active) >= max(2, 2 * self.in_flight + 1):
                    break
                allowed = self.stop.sample_budget(self.progress)
                if allowed is not None and len(active) >= allowed:
                    break  # no sample the rule will not let us fold
                payload = next(stream, None)
                if payload is None:
                    self._exhausted = True
                    break
                sample = _Sample(payload, make_walks(payload))
                sample.start(self.memo)
                active.append(sample)
            for s in active[i].wanted(self.memo):
                chunk.setdefault(s)
                if len(chunk) >= limit:
                    break
            i += 1
        return list(chunk)

    def _fold_ready(self, active, fold) -> None:
        while active and active[0].complete and not self.reasons:
            sample = active.popleft()
            fold(sample.payload, sample.outcomes)
            self.reasons = self.stop.reasons(self.progress)


class ProgressBar:
    """A rich bar counting evaluations (fine-tunes) done out of planned, with an ETA.

    ``planned`` may be None (a time or quality rule only): the bar then counts without a total.
    """

    def __init__(self, enabled: bool, label: str, planned: int | None, unit: str = "fine-tunes"):
        self._bar = None
        if enabled:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn(unit + " {task.fields[info]}"), TimeElapsedColumn(),
                TextColumn("eta"), TimeRemainingColumn(),
            )
            self._task = self._bar.add_task(label, total=planned, info="")
            self._bar.start()

    def update(self, progress) -> None:
        if self._bar is not None:
            info = f"· {progress.n_samples} samples"
            self._bar.update(self._task, completed=progress.n_evaluations, info=info)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
