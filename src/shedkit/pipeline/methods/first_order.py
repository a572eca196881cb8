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

from shedkit.pipeline.first_order_values import first_order_columns, first_order_fit, first_order_info
from shedkit.pipeline.methods.base import MethodContext, MethodResult
from shedkit.pipeline.options import (CommonOptions, DeviceOptions, FirstOrderOptions, ModelOptions, RowGuardOptions,
                                      ScoreOptions, TrainOptions)
from shedkit.pipeline.row_scores import base_loss_column, group_labels


@dataclass
class Options(CommonOptions, DeviceOptions, ModelOptions, FirstOrderOptions, TrainOptions, ScoreOptions, RowGuardOptions):
    """first-order: values, warm-up fine-tune (TrainConfig fields), base-loss guards and quotas."""


def plan(p) -> list:
    """--dry-run: the stages of ``run`` (see ``pipeline/planning.py``)."""
    from shedkit.pipeline.plan_data import select_stage
    from shedkit.pipeline.plan_models import load_model_stage, loss_stage
    from shedkit.pipeline.plan_training import first_order_stages

    group_labels(p.ctx.records, p.option("quota_by"), p.option("quota"))
    stages = [load_model_stage(p), *first_order_stages(p)]
    if p.option("easy_quantile") or p.option("hard_quantile"):
        stages.append(loss_stage(p, "base_losses", "the base model's response loss of every row (for the guards)"))
    return stages + [select_stage(p, "the top rows by first-order value")]


def run(ctx: MethodContext) -> MethodResult:
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
