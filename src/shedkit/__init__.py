"""shedkit: curate instruction-tuning datasets (SHED, LoBaSS, DSIR, DQ, random)."""

__version__ = "0.1.0"

from shedkit.errors import InputError, ShedkitError  # light: no third-party imports


def load_pool(*args, **kwargs):
    """Read a pool file into records; see :func:`shedkit.data.pool.load_pool`."""
    from shedkit.data.pool import load_pool as _load_pool

    return _load_pool(*args, **kwargs)


def select(*args, **kwargs):
    """Select a subset of a pool; see :func:`shedkit.pipeline.select.select`.

    The pool is a file path, a list of dicts, a pandas DataFrame, a ``datasets.Dataset`` or a
    ``DatasetDict`` (with ``split=``); ``result.subset`` is the selection as the same type,
    rows unchanged, and ``result.scores`` a DataFrame with one row per pool row.
    """
    from shedkit.pipeline.select import select as _select

    return _select(*args, **kwargs)


__all__ = ["__version__", "InputError", "ShedkitError", "load_pool", "select"]
