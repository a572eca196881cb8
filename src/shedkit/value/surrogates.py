"""Additive surrogates u(S) = Σ_{i∈S} w_i for control variates: φ(v) = w + φ(v − u).

An additive game's Shapley values are its weights, so a valuation that estimates only the
residual game v − u and adds w back stays unbiased for any fixed w, and the better u fits v,
the less is left to estimate. ``fit_additive`` gives w from the evaluations so far: a
ridge-regularised linear model of v(S) − v(∅) on membership, or, with per-player values g given
(e.g. first-order row values summed per proxy), w = a·g + b: a fitted scale plus a per-player
intercept, constrained to Σw = v(full) − v(∅) (``fit_given``).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def fit_additive(masks: np.ndarray, values: np.ndarray, v_empty: float,
                 given: np.ndarray | None = None, ridge: float = 1e-3, total: float | None = None) -> np.ndarray:
    """Weights w of u(S) = Σ_{i∈S} w_i fitted to v(S) − v(∅) on the (mask, value) pairs;
    ``total`` = v(full) − v(∅) constrains a given surrogate's fit (see ``fit_given``)."""
    X = np.asarray(masks, dtype=float)
    y = np.asarray(values, dtype=float) - v_empty
    if given is not None:
        if total is None:  # v(full) − v(∅) from the full set's row
            full = X.all(axis=1)
            if not full.any():
                raise ValueError("a given surrogate's fit needs total = v(full) − v(∅) (or the full set among the masks)")
            total = float(y[full][0])
        return fit_given(X, y, np.asarray(given, dtype=float), total)
    n = X.shape[1]
    norm = np.sqrt(np.mean(X * X, axis=0)) + 1e-12
    A = X / norm
    w = np.linalg.solve(A.T @ A + ridge * len(y) * np.eye(n), A.T @ y)
    return w / norm


def fit_given(X: np.ndarray, y: np.ndarray, g: np.ndarray, total: float | None = None) -> np.ndarray:
    """w = a·g + b with Σw = ``total`` (v(full) − v(∅); default: the sum of g, i.e. a = 1, b = 0).

    Under the constraint b = (total − a·Σg)/n, so u(S) − total·|S|/n = a·(Σ_{i∈S} g_i − Σg·|S|/n)
    and a is the least-squares slope of y(S) − total·|S|/n on that centred surrogate sum over the
    evaluations. ∅ and the full set carry no information on a (both sides are 0 there); until
    another subset is evaluated a takes its prior: total/Σg (the surrogate scaled to the total,
    b = 0) when the surrogate's mean is away from zero (at least one standard error, sd g/√n)
    and has the total's sign, else |total| / (n·sd g), which keeps g's ranking and gives w a spread of the
    order of the mean value. The intercept is what a centred surrogate (Σg ≈ 0, e.g. LESS
    values with the pool's mean subtracted) needs: scaled alone to the total it blows up (1/Σg).
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    g = np.asarray(g, dtype=float)
    if total is None:
        total = float(g.sum())
    zz = zr = 0.0
    if len(X):
        z, r = given_terms(X, y, g, total)
        informative = given_informative(z, g)
        zz, zr = float(z[informative] @ z[informative]), float(z[informative] @ r[informative])
    return given_weights(g, total, zz, zr)


def given_terms(X: np.ndarray, y: np.ndarray, g: np.ndarray, total: float) -> tuple[np.ndarray, np.ndarray]:
    """Per evaluation (rows of X, values y = v(S) − v(∅)): the centred surrogate sum
    z = Σ_{i∈S} g_i − Σg·|S|/n and the centred value r = y − total·|S|/n (see ``fit_given``)."""
    n = len(g)
    sizes = np.asarray(X, dtype=float).sum(axis=-1)
    return np.asarray(X, dtype=float) @ g - float(g.sum()) * sizes / n, np.asarray(y, dtype=float) - total * sizes / n


def given_informative(z: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The evaluations whose centred surrogate sum is not 0 (∅ and the full set never are)."""
    return np.abs(z) > 1e-12 * (abs(float(g.sum())) + float(g.std()) * len(g))


def given_weights(g: np.ndarray, total: float, zz: float, zr: float) -> np.ndarray:
    """w = a·g + b from the sums Σz² and Σz·r over the informative evaluations (a = Σzr/Σz²;
    with none, Σz² = 0, the prior of ``fit_given``): what a running fit keeps, O(n) per refit."""
    g = np.asarray(g, dtype=float)
    n = len(g)
    g_sum, g_sd = float(g.sum()), float(g.std())
    if g_sd <= 1e-15 * max(1.0, abs(float(g.mean()))):
        return np.full(n, total / n)  # a constant surrogate says nothing beyond the total
    if zz > 0:
        a = zr / zz
    elif abs(g.mean()) * np.sqrt(n) >= g_sd and g_sum * total > 0:
        a = total / g_sum
    else:
        a = abs(total) / (n * g_sd)
    return a * g + (total - a * g_sum) / n


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
