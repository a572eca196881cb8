"""The execution backend a run's ``BackendOptions`` name (``backend``, ``workers``,
``ray_address``, ``gpus_per_job``): SHED's proxy fine-tunes and the loss-scoring shards of the
row-score methods and ``shedkit score`` take it from here. The backends themselves are
``shedkit.execute.backends``."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Mapping

from shedkit.errors import ShedkitError


def backend_options_for(options: Mapping[str, Any] | Any, backend_name: str, runtime: dict) -> dict:
    """Constructor options of the chosen backend from ``workers``, ``ray_address`` and
    ``gpus_per_job`` among ``options`` (a dict or ``ctx``); Ray jobs pinned to CUDA get one GPU
    each unless told otherwise (with 0, Ray hides the GPUs from its workers)."""
    get = options.option if hasattr(options, "option") else options.get
    out = {"workers": get("workers")}
    gpus = get("gpus_per_job")
    if backend_name == "ray":
        out["address"] = get("ray_address")
        if gpus is None:
            gpus = 1 if str(runtime.get("device", "")).startswith("cuda") else None
        out["gpus_per_job"] = None if gpus is None else float(gpus)
    elif gpus is not None:
        raise ShedkitError(f"--gpus-per-job is a Ray setting; it means nothing to --backend {backend_name}")
    return {k: v for k, v in out.items() if v is not None}


@contextmanager
def chosen_backend(options: Mapping[str, Any] | Any, runtime: dict) -> Iterator[Any]:
    """The backend ``options`` name, opened with :func:`backend_options_for` and closed on exit;
    None when none is named (the caller then works in this process, as without backends)."""
    name = (options.option if hasattr(options, "option") else options.get)("backend")
    if name is None:
        yield None
        return
    from shedkit.execute.backends import get_backend

    backend = get_backend(name, **backend_options_for(options, name, runtime))
    try:
        yield backend
    finally:
        backend.close()
