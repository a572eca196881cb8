"""ValuationResult: per-player values, standard errors and counts, with the full history.

The result keeps every permutation's marginal contributions (one row per permutation), so the
values, their standard errors, convergence curves and rank stability are all derived from one
source of truth and a saved result can be re-analysed later. It is saved as JSON (atomic
write; floats round-trip exactly), never pickle.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

    def __post_init__(self):
        self.players = tuple(self.players)
        self.marginals = np.asarray(self.marginals, dtype=float).reshape(-1, len(self.players))
        if self.permutations is not None:
            self.permutations = np.asarray(self.permutations, dtype=np.int64).reshape(
                -1, len(self.players)
            )

    # -- estimates -------------------------------------------------------------------------
    @property
    def n_permutations(self) -> int:
        return int(self.marginals.shape[0])

    def _unit_means(self) -> np.ndarray:
        n_units = self.n_permutations // self.unit_size
        rows = self.marginals[: n_units * self.unit_size]
        return rows.reshape(n_units, self.unit_size, -1).mean(axis=1)

    @property
    def values(self) -> np.ndarray:
        """Mean marginal per player (nan before the first permutation)."""
        if self.n_permutations == 0:
            return np.full(len(self.players), np.nan)
        return self.marginals.mean(axis=0)

    @property
    def stderr(self) -> np.ndarray:
        """Standard error of each value: sample std of the per-sample means / sqrt(#samples)."""
        units = self._unit_means()
        if len(units) < 2:
            return np.full(len(self.players), np.nan)
        return units.std(axis=0, ddof=1) / np.sqrt(len(units))

    @property
    def counts(self) -> np.ndarray:
        """Number of marginals behind each value (every permutation gives each player one)."""
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
        samples (nan with fewer than 4 samples)."""
        units = self._unit_means()
        half = len(units) // 2
        if half < 2:
            return float("nan")
        return spearman(units[:half].mean(axis=0), units[half:].mean(axis=0))

    def efficiency_gaps(self) -> np.ndarray:
        """Per permutation, Σ_i marginal_i − (v(full) − v(∅)); zero for exact efficiency."""
        return self.marginals.sum(axis=1) - (self.v_full - self.v_empty)

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
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ValuationResult":
        if data.get("format") != FORMAT:
            raise ValueError(f"not a shedkit valuation result (format {data.get('format')!r})")
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
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the result as JSON, atomically (temp file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), allow_nan=False))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ValuationResult":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def __repr__(self) -> str:
        return (
            f"ValuationResult({self.estimator}, players={len(self.players)}, "
            f"permutations={self.n_permutations}, evaluations={self.n_evaluations}, "
            f"stopped_by={self.stopped_by!r})"
        )
