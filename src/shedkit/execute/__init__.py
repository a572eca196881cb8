"""Run independent jobs (utility evaluations) sequentially, in a process pool or on Ray."""

from shedkit.execute.backends import (
    BACKENDS,
    Backend,
    ProcessPoolBackend,
    RayBackend,
    SequentialBackend,
    get_backend,
)
from shedkit.execute.jobs import Job, JobOutcome, ScoreJobRunner, WorkerMismatchError, canonical_json, hash_settings

__all__ = [
    "BACKENDS",
    "Backend",
    "Job",
    "JobOutcome",
    "ProcessPoolBackend",
    "RayBackend",
    "ScoreJobRunner",
    "SequentialBackend",
    "WorkerMismatchError",
    "canonical_json",
    "get_backend",
    "hash_settings",
]
