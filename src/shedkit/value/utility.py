"""Utilities: a utility maps a set of player ids to a float, v(S).

Players are proxies keyed by record id, never by text (two proxies with the same instruction
are two players). ``v(∅)`` is whatever the score function says about the empty set (for SHED:
the base model's own score), never a constant.

``CachedUtility`` wraps a score function with a disk cache, one small JSON file per evaluated
subset, so that a finished evaluation (a fine-tune) is never repeated, in this run or a later
one, and counts how many evaluations it computed and how many it reused.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from shedkit.errors import ShedkitError
from shedkit.execute.backends import Backend, get_backend
from shedkit.execute.jobs import Job, JobOutcome, ScoreJobRunner, hash_settings

ScoreFn = Callable[[tuple[str, ...]], float]


def as_subset(ids: Iterable[str]) -> tuple[str, ...]:
    """A subset in canonical form: sorted ids, duplicates rejected."""
    ordered = tuple(sorted(ids))
    if len(set(ordered)) != len(ordered):
        raise ValueError("a subset must not contain the same player id twice")
    return ordered


def _finite(value: float, ids: tuple[str, ...]) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ShedkitError(
            f"the score function returned {value} for a subset of {len(ids)} players; "
            "a utility must be a finite number (did the fine-tune diverge?)"
        )
    return value


class ScoreFunction:
    """Base for picklable score functions: ``score(ids) -> float`` configured by JSON-able
    settings only.

    Subclasses implement ``score(ids)`` and build heavy state (a loaded model, a tokenizer, the
    dev set) lazily through ``self.state``, a per-process dict that is dropped when the object
    is pickled, so process-pool and Ray workers receive just the config and load once each.
    ``settings_hash`` covers the class and its config: pass it to ``CachedUtility``.

        class ProxyFineTuneScore(ScoreFunction):
            def score(self, ids):
                model = self.state.setdefault("base", None) or load(...)  # once per process
                return objective(finetune(model, ids)) if ids else objective(model)
    """

    def __init__(self, **config):
        self.config = config
        self.state: dict = {}

    @property
    def settings_hash(self) -> str:
        cls = type(self)
        return hash_settings({"score_fn": f"{cls.__module__}.{cls.__qualname__}", **self.config})

    def score(self, ids: tuple[str, ...]) -> float:
        raise NotImplementedError

    def __call__(self, ids: tuple[str, ...]) -> float:
        return self.score(tuple(ids))

    def __getstate__(self):
        return {"config": self.config}

    def __setstate__(self, state):
        self.config, self.state = state["config"], {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.config.items())})"


class Utility:
    """v(S) for subsets S of player ids. Subclasses implement ``evaluate(ids)``.

    players  -- the full player set when the utility knows it (games do), else None
    computed -- evaluations this object computed
    reused   -- evaluations it answered from its cache (always 0 without a cache)
    """

    players: tuple[str, ...] | None = None

    def __init__(self) -> None:
        self.computed = 0
        self.reused = 0

    def evaluate(self, ids: tuple[str, ...]) -> float:
        """The score of the subset ``ids`` (sorted, distinct)."""
        raise NotImplementedError

    def __call__(self, subset: Iterable[str]) -> float:
        ids = as_subset(subset)
        value = _finite(self.evaluate(ids), ids)
        self.computed += 1
        return value

    def evaluate_many(
        self, subsets: Sequence[Iterable[str]], backend: Backend | None = None
    ) -> list[float]:
        """Scores of several subsets, as independent jobs on ``backend`` (default: in process).

        For the process and Ray backends the utility itself is pickled to the workers.
        """
        out: list[float] = [math.nan] * len(subsets)
        for i, value in self.evaluate_iter(subsets, backend):
            out[i] = value
        return out

    def evaluate_iter(
        self, subsets: Sequence[Iterable[str]], backend: Backend | None = None
    ) -> Iterator[tuple[int, float]]:
        """``(index, score)`` for each subset as soon as it is known (completion order)."""
        canonical = [as_subset(s) for s in subsets]
        for i, value in get_backend(backend).run(_Evaluate(self), canonical):
            self.computed += 1
            yield i, _finite(value, canonical[i])

    def stats(self) -> dict[str, int]:
        return {"computed": self.computed, "reused": self.reused}


class FunctionUtility(Utility):
    """A plain score function as a utility, without a cache (picklable if ``score_fn`` is)."""

    def __init__(self, score_fn: ScoreFn, players: Iterable[str] | None = None):
        super().__init__()
        self.score_fn = score_fn
        self.players = tuple(players) if players is not None else None

    def evaluate(self, ids):
        return self.score_fn(ids)


class _Evaluate:
    """Picklable ``ids -> utility.evaluate(ids)`` for backends."""

    def __init__(self, utility: Utility):
        self.utility = utility

    def __call__(self, ids: tuple[str, ...]) -> float:
        return self.utility.evaluate(ids)


class CachedUtility(Utility):
    """A score function behind a disk cache keyed by the subset and the settings that matter.

    score_fn      -- ``score_fn(ids: tuple[str, ...]) -> float``, called with the sorted ids of
                     the subset (``()`` for the empty set: the base model's score). For the
                     process and Ray backends it must be picklable: a top-level class holding
                     only its configuration, loading models inside ``__call__``.
    cache_dir     -- where results live; ``None`` keeps them in memory only. The layout is
                     ``<cache_dir>/<settings_hash>/<key[:2]>/<key>.json``, one JSON file per
                     evaluation (ids, settings hash, value, seconds), written atomically
                     (temp file + rename), so a killed run never leaves a half-written entry
                     and several runs may share one cache.
    settings_hash -- hash of every setting that changes a score (see
                     ``shedkit.execute.hash_settings``); a change of any setting is a new cache.
    players       -- optional full player set, so estimators need not be told it again.
    """

    def __init__(
        self,
        score_fn: ScoreFn,
        cache_dir: str | os.PathLike | None,
        settings_hash: str,
        players: Iterable[str] | None = None,
    ):
        super().__init__()
        if not settings_hash:
            raise ValueError("settings_hash must be a non-empty string")
        self.score_fn = score_fn
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.settings_hash = settings_hash
        self.players = tuple(players) if players is not None else None
        self.compute_seconds = 0.0
        self._memory: dict[str, float] = {}

    # -- the cache -----------------------------------------------------------------------
    def job(self, subset: Iterable[str]) -> Job:
        return Job.of(subset, self.settings_hash)

    def path(self, job: Job) -> Path | None:
        if self.cache_dir is None:
            return None
        key = job.key
        return self.cache_dir / self.settings_hash / key[:2] / f"{key}.json"

    def lookup(self, job: Job) -> float | None:
        """The cached score of ``job``, or None if it was never computed."""
        key = job.key
        if key in self._memory:
            return self._memory[key]
        path = self.path(job)
        if path is None or not path.exists():
            return None
        try:
            entry = json.loads(path.read_text())
            if entry["settings_hash"] != job.settings_hash or tuple(entry["ids"]) != job.ids:
                raise ValueError("entry describes a different job")
            value = float(entry["value"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            warnings.warn(f"ignoring unreadable cache entry {path}: {exc}", stacklevel=2)
            return None
        self._memory[key] = value
        return value

    def _store(self, job: Job, outcome: JobOutcome) -> float:
        value = _finite(outcome.value, job.ids)
        self._memory[job.key] = value
        self.computed += 1
        self.compute_seconds += outcome.seconds
        path = self.path(job)
        if path is not None:
            entry = {
                **job.to_dict(),
                "value": value,
                "seconds": round(outcome.seconds, 6),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            from shedkit.data.containers import atomic_write_text

            atomic_write_text(path, json.dumps(entry))
        return value

    # -- evaluation ----------------------------------------------------------------------
    def evaluate(self, ids: tuple[str, ...]) -> float:
        job = self.job(ids)
        cached = self.lookup(job)
        if cached is not None:
            self.reused += 1
            return cached
        return self._store(job, ScoreJobRunner(self.score_fn)(job))

    def __call__(self, subset: Iterable[str]) -> float:
        return self.evaluate(as_subset(subset))

    def evaluate_iter(self, subsets, backend=None):
        """Cached scores are yielded at once; the missing ones run as jobs on ``backend`` and
        each is written to the cache (and yielded) the moment it finishes, so an interruption
        loses only the jobs in flight. Duplicates are evaluated once and yielded for each."""
        jobs = [self.job(s) for s in subsets]
        positions: dict[str, list[int]] = {}
        for i, job in enumerate(jobs):
            positions.setdefault(job.key, []).append(i)
        todo: list[Job] = []
        for key, where in positions.items():
            cached = self.lookup(jobs[where[0]])
            if cached is None:
                todo.append(jobs[where[0]])
                continue
            self.reused += 1
            for i in where:
                yield i, cached
        if todo:
            runner = ScoreJobRunner(self.score_fn)
            for t, outcome in get_backend(backend).run(runner, todo):
                value = self._store(todo[t], outcome)
                for i in positions[todo[t].key]:
                    yield i, value

    def stats(self) -> dict[str, float]:
        return {
            "computed": self.computed,
            "reused": self.reused,
            "compute_seconds": round(self.compute_seconds, 3),
        }
