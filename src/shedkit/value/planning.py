"""Planning a valuation before it runs: planned fine-tunes, one timed, estimated wall time.

SHED's stage of ``--dry-run`` (``shedkit.pipeline.planning``) uses it: ``plan_run`` counts the
evaluations the estimator and rules allow, ``time_one_evaluation`` runs (or reads from the
cache) one representative fine-tune, and ``format_plan`` prints the estimate;
``DryRunFinished`` carries the plan out of the pipeline.
"""

from __future__ import annotations

import json
import time
from typing import Any, Sequence

import numpy as np


class DryRunFinished(Exception):
    """Raised after a dry run printed its plan; ``plan`` holds it. The CLI exits 0 on it.
    Every method's ``--dry-run`` raises it (``shedkit.pipeline.planning``); SHED's valuation
    plan is one of the stages, its keys also at the top of the plan."""

    def __init__(self, plan: dict[str, Any]):
        super().__init__(plan.get("summary") or format_plan(plan))
        self.plan = plan


def plan_run(valuation, n_players: int, workers: int = 1) -> dict[str, Any]:
    """The evaluations ``valuation`` makes at most on ``n_players`` under its stopping rule."""
    stop = valuation._stop()
    return {
        "estimator": valuation.name,
        "params": valuation.params(),
        "players": n_players,
        "stopping": str(stop),
        "planned_evaluations": valuation.planned_evaluations(n_players, stop),
        "evaluations_per_permutation": valuation.evaluations_per_permutation(n_players),
        "workers": int(workers),
        "max_time": _max_time(stop),
    }


def _max_time(stop) -> float | None:
    from shedkit.value.stopping import AnyOf, MaxTime

    if isinstance(stop, MaxTime):
        return stop.seconds
    if isinstance(stop, AnyOf):
        times = [t for r in stop.rules if (t := _max_time(r)) is not None]
        return min(times) if times else None
    return None


def time_one_evaluation(utility, players: Sequence[str], seed: int = 0) -> dict[str, Any]:
    """Evaluate one subset of half the players (the mean subset size of a walk) and time it.

    With a ``CachedUtility`` the result is stored (nothing is wasted) and an entry already
    cached gives its recorded compute time instead."""
    rng = np.random.default_rng(seed)
    size = max(1, len(players) // 2)
    ids = tuple(sorted(rng.choice(list(players), size=size, replace=False).tolist()))
    cached_seconds = None
    path_of = getattr(utility, "path", None)
    if callable(path_of) and hasattr(utility, "job"):
        path = path_of(utility.job(ids))
        if path is not None and path.exists():
            cached_seconds = float(json.loads(path.read_text()).get("seconds", float("nan")))
    start = time.perf_counter()
    utility.evaluate_many([ids])
    seconds = time.perf_counter() - start if cached_seconds is None else cached_seconds
    return {"subset_size": size, "seconds": seconds, "from_cache": cached_seconds is not None}


def estimate_wall_time(plan: dict[str, Any], seconds_per_evaluation: float) -> float | None:
    planned, workers = plan["planned_evaluations"], max(1, plan["workers"])
    if planned is None:
        return plan["max_time"]
    estimate = planned * seconds_per_evaluation / workers
    return min(estimate, plan["max_time"]) if plan["max_time"] else estimate


def _duration(seconds: float | None) -> str:
    if seconds is None or not np.isfinite(seconds):
        return "unknown"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


def format_plan(plan: dict[str, Any]) -> str:
    planned = plan["planned_evaluations"]
    lines = [
        f"dry run: {plan['estimator']} on {plan['players']} players {plan['params'] or ''}".rstrip(),
        f"  stopping rule: {plan['stopping']}",
        "  planned fine-tunes: " + (f"at most {planned}" if planned is not None
                                    else "not bounded by a count (time or quality only)"),
    ]
    timing = plan.get("timing")
    if timing:
        lines.append(
            f"  one fine-tune on {timing['subset_size']} players: {timing['seconds']:.1f} s"
            + (" (from the cache)" if timing["from_cache"] else "")
        )
        lines.append(
            f"  estimated wall time: {_duration(plan.get('estimated_seconds'))} "
            f"with {plan['workers']} worker(s)" + (", capped by --max-time" if plan["max_time"] else "")
        )
    return "\n".join(lines)
