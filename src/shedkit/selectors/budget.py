"""Budgets: a fraction in (0, 1) of the pool or a row count."""

from __future__ import annotations

from shedkit.errors import ShedkitError


def resolve_budget(budget: str | float | int, pool_size: int) -> int:
    """Return the exact number of rows to select.

    ``0.1`` (a fraction strictly between 0 and 1) means 10% of the pool, rounded to the nearest
    row and at least 1; ``500`` (a whole number >= 1) means 500 rows.
    """
    try:
        value = float(budget)
    except (TypeError, ValueError):
        raise ShedkitError(f"--budget must be a fraction in (0, 1) or a row count, got '{budget}'") from None
    if value != value or value <= 0:
        raise ShedkitError(f"--budget must be positive, got {budget}")
    if value < 1:
        count = max(1, int(round(value * pool_size)))
    elif value.is_integer():
        count = int(value)
    else:
        raise ShedkitError(f"--budget {budget} is neither a fraction in (0, 1) nor a whole row count")
    if count > pool_size:
        raise ShedkitError(f"--budget {budget} is larger than the pool ({pool_size} rows)")
    return count
