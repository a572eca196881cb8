"""A job: the small, serialisable description of one utility evaluation.

A job names *what* to evaluate (the subset's player ids, sorted, and the hash of every setting
that changes the score), never *how*: the score function that runs it travels separately, once
per worker. Its ``key`` is the content address under which the result is cached, so the same
job always lands on the same cache entry, on any machine and in any run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from shedkit.util.hashing import canonical_json, stable_hash  # noqa: F401 - canonical_json re-exported


def hash_settings(settings: Mapping[str, Any]) -> str:
    """A stable hash of every setting that changes a score (model, training config, objective,
    dev-set fingerprint, seed...). Values must be JSON-serialisable; paths should be passed as
    strings and datasets as content hashes, so that the hash means the same thing everywhere."""
    return stable_hash(dict(settings), 32)


@dataclass(frozen=True)
class Job:
    """Evaluate the score of the subset ``ids`` under the settings ``settings_hash``."""

    ids: tuple[str, ...]
    settings_hash: str

    @classmethod
    def of(cls, ids: Iterable[str], settings_hash: str) -> "Job":
        """The job for a subset given in any order (ids are sorted; duplicates are an error)."""
        ordered = tuple(sorted(ids))
        if len(set(ordered)) != len(ordered):
            raise ValueError("a subset must not contain the same player id twice")
        return cls(ordered, settings_hash)

    @property
    def key(self) -> str:
        """Content address of the result: sha256 of the sorted ids and the settings hash."""
        return stable_hash([self.settings_hash, list(self.ids)], None)

    def to_dict(self) -> dict[str, Any]:
        return {"ids": list(self.ids), "settings_hash": self.settings_hash}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Job":
        return cls.of(data["ids"], data["settings_hash"])


@dataclass(frozen=True)
class JobOutcome:
    """What a worker sends back: the score and how long it took to compute."""

    value: float
    seconds: float


class ScoreJobRunner:
    """Runs a job with a score function: ``runner(job) -> JobOutcome``.

    Picklable whenever ``score_fn`` is (a top-level class holding only its config is), so it can
    be shipped to process-pool and Ray workers. If the score function carries a
    ``settings_hash`` attribute it must match the job's, which catches a worker configured
    differently from the driver before it wastes a fine-tune.
    """

    def __init__(self, score_fn: Callable[[tuple[str, ...]], float]):
        self.score_fn = score_fn

    def __call__(self, job: Job) -> JobOutcome:
        expected = getattr(self.score_fn, "settings_hash", None)
        if isinstance(expected, str) and expected != job.settings_hash:
            raise ValueError(
                f"job settings hash {job.settings_hash} does not match the score function's "
                f"{expected}: driver and worker are configured differently"
            )
        start = time.perf_counter()
        value = float(self.score_fn(job.ids))
        return JobOutcome(value, time.perf_counter() - start)
