"""--method first-order: the top rows by first-order value against the target dev set.

Values come from ``shedkit.value.first_order.FirstOrderValuation`` (TracIn/LESS over the
checkpoints of one short warm-up LoRA fine-tune; cached per row and checkpoint under
``<cache_dir>/first-order``). Selection is top ``budget`` by value with LoBaSS's guards and
quotas (``easy_quantile``/``hard_quantile`` on the base model's response loss, computed only
when a guard is asked; ``quota_by``/``quota``). Rows with no value (empty response, nothing
left after truncation) are never selected.

Options (None = default): ``model`` ("smollm2-135m"), ``target`` (required; loss rows; with
``less`` each file is a task), ``fo_normalize`` ("raw" | "cosine" | "less": Adam-preconditioned,
centred, cosine per target file, max over files -- see ``shedkit.value.first_order``),
``fo_center`` (less: True), ``fo_center_rows`` (less: 256), ``fo_task_reduce`` (less: "max" |
"mean"), ``fo_checkpoints`` (2), ``fo_warmup`` (share of the pool,
or a row count, to warm up on: 0.05), ``fo_layers`` (adapt only the last N decoder layers;
default every layer), ``fo_projection_dim`` (0: no projected features), ``fo_batch_size`` (8);
the warm-up fine-tune takes the ``TrainConfig`` fields by name (``epochs``, ``lr``,
``max_length``, ``precision``, ``lora_r``, ``batch_size``...).

scores.csv columns: ``first_order`` (the value used), ``first_order_raw``,
``first_order_cosine``, with ``less`` ``first_order_less`` and, given several target files,
``first_order_less_<file stem>`` per file, ``response_tokens``, ``excluded``, ``group`` (with
quotas).

No ``VERSION``: the default (``raw``) selects the same rows as before ``less`` existed.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from dataclasses import dataclass

from shedkit.errors import ShedkitError
from shedkit.pipeline.methods.base import MethodContext, MethodResult
from shedkit.pipeline.options import (CommonOptions, DeviceOptions, FirstOrderOptions, ModelOptions, RowGuardOptions,
                                      ScoreOptions, TrainOptions)
from shedkit.util.defaults import DEFAULT_MODEL


@dataclass
class Options(CommonOptions, DeviceOptions, ModelOptions, FirstOrderOptions, TrainOptions, ScoreOptions, RowGuardOptions):
    """first-order: values, warm-up fine-tune (TrainConfig fields), base-loss guards and quotas."""


def first_order_fit(ctx: MethodContext):
    """The fitted FirstOrderValuation of ``ctx.records`` against ``ctx.option("target")``;
    its result is also saved as ``run_dir/work/first_order.json``."""
    from shedkit.pipeline.methods.lobass import train_config_from
    from shedkit.pipeline.methods.shed import load_targets
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

    from shedkit.pipeline.methods.shed import load_targets

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


def run(ctx: MethodContext) -> MethodResult:
    from shedkit.pipeline.methods.lobass import group_labels
    from shedkit.selectors.learnability import select_by_score

    groups = group_labels(ctx.records, ctx.option("quota_by"), ctx.option("quota"))
    easy, hard = float(ctx.option("easy_quantile", 0.0)), float(ctx.option("hard_quantile", 0.0))
    t0 = time.perf_counter()
    fit = first_order_fit(ctx)
    timings = {"value": time.perf_counter() - t0}
    guard_loss = None
    info_extra: dict[str, Any] = {}
    if easy or hard:
        t0 = time.perf_counter()
        guard_loss, info_extra["base_losses"] = base_loss_column(ctx)
        timings["base_losses"] = time.perf_counter() - t0
    sel = select_by_score(fit.result_.values, ctx.budget, guard_loss=guard_loss, easy_quantile=easy,
                          hard_quantile=hard, groups=groups, quota=ctx.option("quota"))
    columns: dict[str, Sequence[Any]] = {**first_order_columns(fit), "excluded": sel.excluded}
    if guard_loss is not None:
        columns["loss_base"] = guard_loss.tolist()
    if groups is not None:
        columns["group"] = groups
    info = {**first_order_info(fit), "selection": sel.info(), **info_extra,
            "guards": {"easy_quantile": easy, "hard_quantile": hard}}
    return MethodResult(selected=sel.selected, columns=columns, info=info, timings=timings)


def base_loss_column(ctx: MethodContext, ifd: bool = False):
    """The base model's per-row response loss (NaN for rows without one), and a summary."""
    from shedkit.models.loading import model_identity, shared_model
    from shedkit.pipeline.methods.lobass import _losses, score_config_from

    spec = str(ctx.option("model", DEFAULT_MODEL))
    model, tok = shared_model(spec, device=ctx.option("device"))
    res = _losses(model, tok, ctx, score_config_from(ctx), model_identity(spec), ifd=ifd)
    return res.column("loss", len(ctx.records)), {"computed": len(res.ids) - res.cached, "cached": res.cached}

