"""First-order (TracIn/LESS) row values of the pool against the target dev set, for the methods
that use them (first-order, shed-hybrid's row scores and cluster values, SHED's
``--cluster-value first-order``): the fitted valuation, its scores.csv columns and manifest
summary, and cluster values summed from row values. The values themselves are
``shedkit.value.first_order.FirstOrderValuation``."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from shedkit.errors import ShedkitError
from shedkit.pipeline.methods.base import MethodContext
from shedkit.pipeline.options import train_config_from
from shedkit.pipeline.targets import load_targets
from shedkit.util.defaults import DEFAULT_MODEL


def first_order_fit(ctx: MethodContext):
    """The fitted FirstOrderValuation of ``ctx.records`` against ``ctx.option("target")``;
    its result is also saved as ``run_dir/work/first_order.json``."""
    from shedkit.value.registry import get_valuation

    targets = ctx.option("target")
    dev = load_targets(targets)
    if not dev.records:
        raise ShedkitError("first-order values need a target of instruction/response rows (a loss target), "
                           "not multiple-choice items")
    normalize = str(ctx.option("fo_normalize", "raw"))
    tasks = target_tasks(targets) if normalize == "less" else None
    layers = ctx.option("fo_layers")
    center = ctx.option("fo_center")
    valuation = get_valuation("first-order")(
        model=str(ctx.option("model", DEFAULT_MODEL)),
        train_config=train_config_from(ctx),
        warmup_rows=float(ctx.option("fo_warmup", 0.05)),
        checkpoints=int(ctx.option("fo_checkpoints", 2)),
        last_layers=int(layers) if layers else None,
        normalize=normalize,
        center=True if center is None else bool(center),
        center_rows=int(ctx.option("fo_center_rows", 256)),
        task_reduce=str(ctx.option("fo_task_reduce", "max")),
        projection_dim=int(ctx.option("fo_projection_dim", 0)),
        batch_size=int(ctx.option("fo_batch_size", 8)),
        cache_dir=ctx.cache_dir, seed=ctx.seed, device=ctx.option("device"),
        progress=bool(ctx.option("progress", True)),
    ).fit(ctx.records, dev, tasks=tasks)
    (ctx.run_dir / "work").mkdir(parents=True, exist_ok=True)
    valuation.result_.save(ctx.run_dir / "work" / "first_order.json")
    return valuation


def target_tasks(targets) -> list[tuple[str, Any]]:
    """One ``(name, DevSet)`` per target file, named by the file's stem (made unique): the
    tasks that ``--fo-normalize less`` values separately."""
    import re
    from pathlib import Path

    paths = [targets] if isinstance(targets, (str, bytes)) or not hasattr(targets, "__iter__") else list(targets)
    out, seen = [], set()
    for path in paths:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(path)).stem) or "target"
        base, k = name, 2
        while name in seen:
            name, k = f"{base}_{k}", k + 1
        seen.add(name)
        task = load_targets([path])
        if not task.records:
            raise ShedkitError(f"target {path}: first-order values need instruction/response rows (a loss target)")
        out.append((name, task))
    return out


def first_order_columns(fit) -> dict[str, Sequence[Any]]:
    out = {"first_order": fit.result_.values.tolist(), "first_order_raw": fit.raw_.tolist(),
           "first_order_cosine": fit.cosine_.tolist()}
    less = getattr(fit, "less_", None)
    if less is not None:
        out["first_order_less"] = less.tolist()
        if len(fit.task_names_) > 1:
            out.update({f"first_order_less_{name}": fit.less_tasks_[k].tolist()
                        for k, name in enumerate(fit.task_names_)})
    out["response_tokens"] = fit.n_tokens_.tolist()
    return out


def first_order_info(fit) -> dict[str, Any]:
    stats = dict(fit.stats_)
    keys = ("row_gradients_computed", "row_gradients_cached", "center_gradients_computed", "warmup", "less", "timings")
    return {"valuation": "first-order", "params": fit.params(), "cache_key": fit.result_.info.get("cache_key"),
            **{k: stats[k] for k in keys if k in stats}}


def first_order_cluster_values(labels, row_values, n_clusters: int, reduce: str = "sum") -> dict[int, float]:
    """Each cluster's value: the sum (or mean) of its rows' finite first-order values; a
    cluster with none gets the lowest value of the others (it is taken last)."""
    if reduce not in ("sum", "mean"):
        raise ShedkitError(f"--cluster-value-reduce must be 'sum' or 'mean', not {reduce!r}")
    labels = np.asarray(labels)
    values = np.asarray(row_values, dtype=np.float64)
    out: dict[int, float] = {}
    for c in range(n_clusters):
        v = values[(labels == c) & np.isfinite(values)]
        out[c] = float(v.sum() if reduce == "sum" else v.mean()) if len(v) else float("nan")
    finite = [v for v in out.values() if np.isfinite(v)]
    if not finite:
        raise ShedkitError("no row has a first-order value: cannot value the clusters")
    return {c: (v if np.isfinite(v) else min(finite)) for c, v in out.items()}
