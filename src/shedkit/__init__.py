"""shedkit: curate instruction-tuning datasets (SHED, LoBaSS, DSIR, DQ, random)."""

__version__ = "0.1.0"


def load_pool(*args, **kwargs):
    """Read a pool file into records; see :func:`shedkit.data.pool.load_pool`."""
    from shedkit.data.pool import load_pool as _load_pool

    return _load_pool(*args, **kwargs)


def select(*args, **kwargs):
    """Select a subset of a pool; see :func:`shedkit.pipeline.select.select`."""
    from shedkit.pipeline.select import select as _select

    return _select(*args, **kwargs)


__all__ = ["__version__", "load_pool", "select"]
