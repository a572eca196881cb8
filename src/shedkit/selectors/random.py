"""RS: uniform sampling without replacement (the baseline every paper compares against)."""

from __future__ import annotations

import numpy as np


def random_sample(pool_size: int, n: int, rng: np.random.Generator) -> np.ndarray:
    if not 0 < n <= pool_size:
        raise ValueError(f"cannot draw {n} rows from a pool of {pool_size}")
    return np.sort(rng.choice(pool_size, size=n, replace=False))
