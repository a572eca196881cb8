"""Additive surrogates u(S) = Σ_{i∈S} w_i for control variates: φ(v) = w + φ(v − u).

An additive game's Shapley values are its weights, so a valuation that estimates only the
residual game v − u and adds w back stays unbiased for any fixed w, and the better u fits v,
the less is left to estimate. ``fit_additive`` gives w from the evaluations so far: a
ridge-regularised linear model of v(S) − v(∅) on membership, or, with per-player values given
(e.g. first-order row values summed per proxy), those values times a fitted scale.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def fit_additive(masks: np.ndarray, values: np.ndarray, v_empty: float,
                 given: np.ndarray | None = None, ridge: float = 1e-3) -> np.ndarray:
    """Weights w of u(S) = Σ_{i∈S} w_i fitted to v(S) − v(∅) on the (mask, value) pairs."""
    X = np.asarray(masks, dtype=float)
    y = np.asarray(values, dtype=float) - v_empty
    if given is not None:
        z = X @ given
        scale = float(z @ y / (z @ z)) if z @ z > 0 else 0.0
        return scale * given
    n = X.shape[1]
    norm = np.sqrt(np.mean(X * X, axis=0)) + 1e-12
    A = X / norm
    w = np.linalg.solve(A.T @ A + ridge * len(y) * np.eye(n), A.T @ y)
    return w / norm


def given_vector(surrogate: Mapping[str, float], players: Sequence[str]) -> np.ndarray:
    from shedkit.errors import ShedkitError

    missing = [p for p in players if p not in surrogate]
    if missing:
        raise ShedkitError(f"surrogate has no value for {len(missing)} player(s), e.g. {missing[0]!r}")
    return np.array([float(surrogate[p]) for p in players])


def memo_arrays(memo: Mapping[tuple[int, ...], float], n: int) -> tuple[np.ndarray, np.ndarray]:
    """(masks, values) of the subsets evaluated so far (index tuples -> value)."""
    masks = np.zeros((len(memo), n), dtype=bool)
    values = np.empty(len(memo))
    for row, (subset, value) in enumerate(memo.items()):
        masks[row, list(subset)] = True
        values[row] = value
    return masks, values
