"""Moved to :mod:`shedkit.pipeline.cluster_sampling` (not a method: SHED's clustering and
sampling steps, shared by the methods that sample clusters by value). Kept as a re-export."""

from shedkit.pipeline.cluster_sampling import (  # noqa: F401
    SAMPLERS,
    cluster_seed,
    clustering_for,
    run_from_values,
    sampling_result,
    values_by_cluster,
)
