"""ValuationResult: per-player values, standard errors and counts, with the full history.

A result comes in one of two forms:
- from permutations: it keeps every permutation's marginal contributions (one row per
  permutation), so the values, their standard errors, convergence curves and rank stability
  are all derived from one source of truth and a saved result can be re-analysed later;
- from plain values (``ValuationResult.from_values``): per-player values, standard errors and
  counts given directly, for valuations without a marginal matrix (first-order row values,
  closed forms, subset-sampling estimators such as MSR Banzhaf).
Two results over the same players merge (``merge``) into their count-weighted combination.
Saved as JSON (atomic write; floats round-trip exactly), never pickle.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

FORMAT = "shedkit.valuation/1"


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); nan when either side is constant."""
    from scipy.stats import rankdata

    ra, rb = rankdata(a), rankdata(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def _num(x: float) -> float | None:
    """JSON has no NaN: write it as null."""
    return None if x is None or np.isnan(x) else float(x)


def _float(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def _vector(x, n: int, dtype, name: str) -> np.ndarray:
    out = np.asarray(x, dtype=dtype).reshape(-1)
    if out.shape != (n,):
        raise ValueError(f"{name} must have one entry per player ({n}), got {out.shape[0]}")
    return out


def _jsonable(obj: Any) -> Any:
    """numpy scalars and arrays (in params/info) as plain JSON values; NaN as null."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


@dataclass
class ValuationResult:
    """Values estimated from ``marginals[t, i]``: player i's marginal in permutation t.

    unit_size     -- consecutive permutations that form one independent sample (2 for
                     antithetic pairs, else 1); standard errors and rank stability use the
                     per-sample means, so correlated pairs are not counted as independent.
    permutations  -- player indices in the order each permutation visited them (optional).
    n_evaluations -- distinct subsets the estimate used (cached or not);
    n_computed / n_reused -- of the utility's evaluations in this run, how many were computed
                     and how many answered from the cache.
    """

    players: tuple[str, ...]
    marginals: np.ndarray
    unit_size: int = 1
    permutations: np.ndarray | None = None
    v_empty: float = float("nan")
    v_full: float = float("nan")
    estimator: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    stopped_by: str = ""
    n_evaluations: int = 0
    n_computed: int = 0
    n_reused: int = 0
    elapsed: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    plain_values: np.ndarray | None = None
    plain_stderr: np.ndarray | None = None
    plain_counts: np.ndarray | None = None

    def __post_init__(self):
        self.players = tuple(self.players)
        n = len(self.players)
        self.marginals = np.asarray(self.marginals, dtype=float).reshape(-1, n)
        if self.plain_values is not None:
            if self.marginals.shape[0]:
                raise ValueError("a result holds either marginals or plain values, not both")
            self.plain_values = _vector(self.plain_values, n, float, "values")
            self.plain_stderr = (
                np.full(n, np.nan) if self.plain_stderr is None
                else _vector(self.plain_stderr, n, float, "stderr")
            )
            self.plain_counts = (
                np.ones(n, dtype=np.int64) if self.plain_counts is None
                else _vector(self.plain_counts, n, np.int64, "counts")
            )
        if self.permutations is not None:
            self.permutations = np.asarray(self.permutations, dtype=np.int64).reshape(
                -1, len(self.players)
            )

    @classmethod
    def from_values(
        cls,
        players: Sequence[str],
        values: Sequence[float] | np.ndarray,
        stderr: Sequence[float] | np.ndarray | None = None,
        counts: Sequence[int] | np.ndarray | None = None,
        **info: Any,
    ) -> "ValuationResult":
        """A result with plain per-player values (no marginal matrix).

        stderr -- per-player standard errors (default: unknown, nan)
        counts -- per-player number of observations behind each value (default: 1 each);
                  ``merge`` weights by them
        info   -- keywords naming a result field (``estimator``, ``params``, ``seed``,
                  ``v_empty``, ``v_full``, ``n_evaluations``, ``stopped_by``...) set it; any
                  other keyword is kept in ``result.info`` (saved with the result).
        """
        fields = {f for f in cls.__dataclass_fields__} - {
            "players", "marginals", "plain_values", "plain_stderr", "plain_counts", "info"
        }
        known = {k: v for k, v in info.items() if k in fields}
        extra = {k: v for k, v in info.items() if k not in fields}
        return cls(
            players=tuple(players), marginals=np.zeros((0, len(players))), plain_values=values,
            plain_stderr=stderr, plain_counts=counts, info=extra, **known,
        )

    @property
    def is_plain(self) -> bool:
        """True for a result built from plain values (no per-permutation marginals)."""
        return self.plain_values is not None

    # -- estimates -------------------------------------------------------------------------
    @property
    def n_permutations(self) -> int:
        return int(self.marginals.shape[0])

    def _unit_means(self) -> np.ndarray:
        if self.is_plain:
            return np.zeros((0, len(self.players)))
        n_units = self.n_permutations // self.unit_size
        if n_units == 0:  # e.g. a time limit hit before the first whole sample
            return np.zeros((0, len(self.players)))
        rows = self.marginals[: n_units * self.unit_size]
        return rows.reshape(n_units, self.unit_size, len(self.players)).mean(axis=1)

    @property
    def values(self) -> np.ndarray:
        """Mean marginal per player (nan before the first permutation)."""
        if self.plain_values is not None:
            return self.plain_values.copy()
        if self.n_permutations == 0:
            return np.full(len(self.players), np.nan)
        return self.marginals.mean(axis=0)

    @property
    def stderr(self) -> np.ndarray:
        """Standard error of each value: sample std of the per-sample means / sqrt(#samples)."""
        if self.plain_stderr is not None:
            return self.plain_stderr.copy()
        units = self._unit_means()
        if len(units) < 2:
            return np.full(len(self.players), np.nan)
        return units.std(axis=0, ddof=1) / np.sqrt(len(units))

    @property
    def n_samples(self) -> int:
        """Independent samples behind the estimate (so stopping rules can read a result)."""
        if self.is_plain:
            return int(self.info.get("n_samples", 0))
        return self.n_permutations // self.unit_size

    @property
    def counts(self) -> np.ndarray:
        """Number of marginals behind each value (every permutation gives each player one)."""
        if self.plain_counts is not None:
            return self.plain_counts.copy()
        return np.full(len(self.players), self.n_permutations, dtype=np.int64)

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.players, map(float, self.values)))

    def value_of(self, player: str) -> float:
        return float(self.values[self.players.index(player)])

    def ranking(self) -> list[str]:
        """Player ids from the highest value to the lowest (ties keep player order)."""
        order = np.argsort(-self.values, kind="stable")
        return [self.players[i] for i in order]

    # -- diagnostics -----------------------------------------------------------------------
    def running_values(self) -> np.ndarray:
        """Estimates after each sample (rows: 1, 2, ... samples): a convergence curve."""
        units = self._unit_means()
        return np.cumsum(units, axis=0) / np.arange(1, len(units) + 1)[:, None]

    def rank_stability(self) -> float:
        """Spearman correlation between the values from the first and second half of the
        samples (nan with fewer than 4 samples); for plain values, what the valuation recorded
        in ``info["rank_stability"]`` (nan if nothing)."""
        if self.is_plain:
            return _float(self.info.get("rank_stability"))
        units = self._unit_means()
        half = len(units) // 2
        if half < 2:
            return float("nan")
        return spearman(units[:half].mean(axis=0), units[half:].mean(axis=0))

    def efficiency_gaps(self) -> np.ndarray:
        """Per permutation, Σ_i marginal_i − (v(full) − v(∅)); zero for exact efficiency."""
        return self.marginals.sum(axis=1) - (self.v_full - self.v_empty)

    # -- combination -----------------------------------------------------------------------
    def merge(self, other: "ValuationResult") -> "ValuationResult":
        """The count-weighted combination of two results over the same players.

        value_i = (c_i v_i + c'_i v'_i) / (c_i + c'_i), stderr_i combines both as independent
        estimates, sqrt(c_i² s_i² + c'_i² s'_i²) / (c_i + c'_i), counts add. Two permutation
        results with the same unit size keep their marginals (rows stacked, so the standard
        errors come from the pooled samples); any other pair gives a plain-values result.
        Evaluation counts and times add; a player with count 0 on one side takes the other's.
        """
        if set(self.players) != set(other.players) or len(self.players) != len(other.players):
            raise ValueError("merge needs two results over the same players")
        order = [other.players.index(p) for p in self.players]
        common = dict(
            v_empty=self.v_empty if np.isfinite(self.v_empty) else other.v_empty,
            v_full=self.v_full if np.isfinite(self.v_full) else other.v_full,
            estimator=self.estimator if self.estimator == other.estimator
            else f"{self.estimator}+{other.estimator}",
            params=self.params if self.params == other.params else {},
            seed=self.seed if self.seed == other.seed else None,
            stopped_by=self.stopped_by,
            n_evaluations=self.n_evaluations + other.n_evaluations,
            n_computed=self.n_computed + other.n_computed,
            n_reused=self.n_reused + other.n_reused,
            elapsed=self.elapsed + other.elapsed,
            info={**other.info, **self.info},
        )
        if not self.is_plain and not other.is_plain and self.unit_size == other.unit_size:
            perms = None
            if self.permutations is not None and other.permutations is not None:
                remap = np.array([self.players.index(p) for p in other.players])
                perms = np.vstack([self.permutations, remap[other.permutations]])
            return ValuationResult(
                players=self.players, unit_size=self.unit_size, permutations=perms,
                marginals=np.vstack([self.marginals, other.marginals[:, order]]), **common,
            )
        c1, c2 = self.counts.astype(float), other.counts[order].astype(float)
        v1, v2 = self.values, other.values[order]
        s1, s2 = self.stderr, other.stderr[order]
        total = c1 + c2
        with np.errstate(invalid="ignore", divide="ignore"):
            values = np.where(c1 == 0, v2, np.where(c2 == 0, v1, (c1 * v1 + c2 * v2) / total))
            stderr = np.where(
                c1 == 0, s2,
                np.where(c2 == 0, s1, np.sqrt((c1 * s1) ** 2 + (c2 * s2) ** 2) / total),
            )
        return ValuationResult.from_values(
            self.players, values, stderr, total.astype(np.int64), **{**common.pop("info"), **common}
        )

    # -- persistence -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "estimator": self.estimator,
            "params": self.params,
            "seed": self.seed,
            "stopped_by": self.stopped_by,
            "players": list(self.players),
            "values": [_num(v) for v in self.values],
            "stderr": [_num(s) for s in self.stderr],
            "counts": [int(c) for c in self.counts],
            "v_empty": _num(self.v_empty),
            "v_full": _num(self.v_full),
            "n_permutations": self.n_permutations,
            "unit_size": self.unit_size,
            "n_evaluations": self.n_evaluations,
            "n_computed": self.n_computed,
            "n_reused": self.n_reused,
            "elapsed": self.elapsed,
            "marginals": self.marginals.tolist(),
            "permutations": None if self.permutations is None else self.permutations.tolist(),
            "plain": self.is_plain,
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ValuationResult":
        if data.get("format") != FORMAT:
            raise ValueError(f"not a shedkit valuation result (format {data.get('format')!r})")
        plain = {}
        if data.get("plain"):
            plain = dict(
                plain_values=[_float(v) for v in data["values"]],
                plain_stderr=[_float(v) for v in data["stderr"]],
                plain_counts=data["counts"],
            )
        return cls(
            players=tuple(data["players"]),
            marginals=np.array(data["marginals"], dtype=float),
            unit_size=int(data["unit_size"]),
            permutations=None if data["permutations"] is None else np.array(data["permutations"]),
            v_empty=_float(data["v_empty"]),
            v_full=_float(data["v_full"]),
            estimator=data["estimator"],
            params=dict(data["params"]),
            seed=data["seed"],
            stopped_by=data["stopped_by"],
            n_evaluations=int(data["n_evaluations"]),
            n_computed=int(data["n_computed"]),
            n_reused=int(data["n_reused"]),
            elapsed=float(data["elapsed"]),
            info=dict(data.get("info") or {}),
            **plain,
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the result as JSON, atomically (temp file + rename)."""
        from shedkit.data.containers import atomic_write_text

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(path, json.dumps(_jsonable(self.to_dict()), allow_nan=False))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ValuationResult":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def __repr__(self) -> str:
        if self.is_plain:
            return f"ValuationResult({self.estimator}, players={len(self.players)}, plain values)"
        return (
            f"ValuationResult({self.estimator}, players={len(self.players)}, "
            f"permutations={self.n_permutations}, evaluations={self.n_evaluations}, "
            f"stopped_by={self.stopped_by!r})"
        )
