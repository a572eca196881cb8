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
from shedkit.errors import ShedkitError


def hash_settings(settings: Mapping[str, Any]) -> str:
    """A stable hash of every setting that changes a score (model, training config, objective,
    dev-set fingerprint, seed...). Values must be JSON-serialisable; paths should be passed as
    strings and datasets as content hashes, so that the hash means the same thing everywhere."""
    return stable_hash(dict(settings), 32)


@dataclass(frozen=True)
class Job:
    """Evaluate the score of the subset ``ids`` under the settings ``settings_hash``.

    ``device`` and ``precision`` are what the driver resolved the job to run on (e.g. "cuda",
    "bf16"); they are part of ``settings_hash`` already, and travel with the job so a worker
    can refuse to run it elsewhere. ``None`` means "not pinned" (plain score functions).
    """

    ids: tuple[str, ...]
    settings_hash: str
    device: str | None = None
    precision: str | None = None

    @classmethod
    def of(cls, ids: Iterable[str], settings_hash: str, device: str | None = None,
           precision: str | None = None) -> "Job":
        """The job for a subset given in any order (ids are sorted; duplicates are an error)."""
        ordered = tuple(sorted(ids))
        if len(set(ordered)) != len(ordered):
            raise ValueError("a subset must not contain the same player id twice")
        return cls(ordered, settings_hash, device, precision)

    @property
    def key(self) -> str:
        """Content address of the result: sha256 of the sorted ids and the settings hash."""
        return stable_hash([self.settings_hash, list(self.ids)], None)

    @property
    def runtime(self) -> dict[str, str] | None:
        """``{device, precision}`` the job is pinned to, or None."""
        if self.device is None and self.precision is None:
            return None
        return {"device": self.device, "precision": self.precision}

    def pinned(self, runtime: Mapping[str, Any] | None) -> "Job":
        """This job pinned to ``runtime`` (``{device, precision}``) unless it already is."""
        if self.runtime is not None or not runtime:
            return self
        return Job(self.ids, self.settings_hash, runtime.get("device"), runtime.get("precision"))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ids": list(self.ids), "settings_hash": self.settings_hash}
        if self.runtime is not None:
            out.update(self.runtime)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Job":
        return cls.of(data["ids"], data["settings_hash"], data.get("device"), data.get("precision"))


@dataclass(frozen=True)
class JobOutcome:
    """What a worker sends back: the score and how long it took to compute."""

    value: float
    seconds: float


class WorkerMismatchError(ShedkitError, ValueError):
    """A worker would compute a job under other settings than the job's cache key says."""


class ScoreJobRunner:
    """Runs a job with a score function: ``runner(job) -> JobOutcome``.

    Picklable whenever ``score_fn`` is (a top-level class holding only its config is), so it can
    be shipped to process-pool and Ray workers. Before computing, in the worker:

    - if the score function has a ``settings_hash`` (a property, or a method), it is computed
      *there* and must equal the job's: a worker configured differently from the driver (other
      library versions, another model file) refuses before it wastes a fine-tune;
    - if it has ``runtime`` (the ``{device, precision}`` the driver pinned) and
      ``actual_runtime()`` (what this worker would really run), the job's pinned runtime (or,
      for a job that carries none, the one the runner saw in the driver) must equal the actual
      one: a Ray worker that was given no GPU refuses a job keyed for CUDA/bf16 instead of
      caching CPU/fp32 values under that key.
    """

    def __init__(self, score_fn: Callable[[tuple[str, ...]], float]):
        self.score_fn = score_fn
        runtime = getattr(score_fn, "runtime", None)  # resolved in the driver, travels pickled
        self.runtime = dict(runtime) if isinstance(runtime, Mapping) else None

    def check(self, job: Job) -> None:
        """Raise ``WorkerMismatchError`` when this worker must not compute ``job``."""
        fn = self.score_fn
        expected = job.runtime or self.runtime
        actual_fn = getattr(fn, "actual_runtime", None)
        if expected and callable(actual_fn):
            actual = dict(actual_fn())
            if {k: actual.get(k) for k in expected} != dict(expected):
                hint = ""
                if str(expected.get("device", "")).startswith("cuda") and not str(actual.get("device", "")).startswith("cuda"):
                    hint = (" (this worker sees no GPU: with --backend ray give each job one, --gpus-per-job 1; "
                            "or pin the run to the CPU with --device cpu)")
                raise WorkerMismatchError(
                    f"job keyed for device={expected.get('device')} precision={expected.get('precision')} "
                    f"would run here with device={actual.get('device')} precision={actual.get('precision')}; "
                    f"refusing to cache its value under that key{hint}"
                )
        own = getattr(fn, "settings_hash", None)
        if callable(own):
            own = own()
        if isinstance(own, str) and own != job.settings_hash:
            raise WorkerMismatchError(
                f"job settings hash {job.settings_hash} does not match the score function's "
                f"{own}: driver and worker are configured differently (same shedkit, torch, "
                "transformers and peft versions and the same model files are needed on every worker)"
            )

    def __call__(self, job: Job) -> JobOutcome:
        self.check(job)
        start = time.perf_counter()
        value = float(self.score_fn(job.ids))
        return JobOutcome(value, time.perf_counter() - start)
