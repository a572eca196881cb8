"""--method lowest-loss | ifd | filtered-random: the plain per-row filters every comparison needs
(DESIGN.md).

``lowest-loss``  the rows with the lowest base-model response loss (mean over the response
                 tokens; the loss cache is shared with LoBaSS).
``ifd``          Cherry LLM's instruction-following difficulty,
                 IFD = loss(response | instruction) / loss(response alone). The numerator is
                 the row's response loss as above (for a multi-turn row: over all its
                 responses); the denominator scores the last response's text (content +
                 end-of-turn marker) after a single start token, with no chat template
                 around it: no default system prompt, no assistant header (Cherry tokenizes
                 the bare output). ``ifd_order`` "low" (default: the rows the instruction
                 explains best; on noisy-mix-v1 the cleanest) or "high" (Cherry's choice:
                 the hardest rows), with ``ifd_drop_ge1`` (Cherry's rule: rows with
                 IFD >= 1, whose instruction does not help, are never selected).

``filtered-random``  random rows among those high on neither base loss nor IFD: each row's
                 score is minus the larger of its pool percentiles by the two
                 (``selectors.hybrid.loss_ifd_score``); the best ``filter_keep`` share
                 (default 0.75) of the scored rows pass, and ``budget`` of them are drawn
                 uniformly (seeded). Unlike taking the lowest scores first, the subset keeps
                 the pool's spread of lengths and difficulty; it is shed-hybrid's
                 ``loss-ifd`` filter without the clusters.

lowest-loss and ifd use the LoBaSS guards and quotas (``easy_quantile``, ``hard_quantile``, ``quota_by``,
``quota``) and the scoring options (``max_length``, ``precision``, ``template``,
``score_batch_size``, ``max_batch_tokens``). scores.csv: ``loss_base``, (``loss_alone``,
``ifd``), ``excluded`` ("" or undefined / easy / hard / no-quota / ifd>=1).
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from dataclasses import dataclass
from typing import Optional

from shedkit.errors import ShedkitError
from shedkit.pipeline.methods.base import MethodContext, MethodResult
from shedkit.pipeline.options import (BackendOptions, CommonOptions, DeviceOptions, ModelOptions, RowGuardOptions,
                                      ScoreOptions, TrainOptions, opt)
from shedkit.pipeline.row_scores import base_loss_column, group_labels, ifd_ratio, response_alone_losses
from shedkit.util.defaults import DEFAULT_MODEL


@dataclass
class Options(CommonOptions, DeviceOptions, ModelOptions, TrainOptions, ScoreOptions, RowGuardOptions, BackendOptions):
    ifd_order: Optional[str] = opt("--method ifd: low (default; lowest IFD first) or high (Cherry's).")
    ifd_drop_ge1: Optional[bool] = opt("--method ifd: never select rows with IFD >= 1 (Cherry's rule).",
                                       flags=("--ifd-drop-ge1/--ifd-keep-ge1",))
    filter_keep: Optional[float] = opt("--method filtered-random: the share of rows that pass the loss/IFD filter (default 0.75).")


def run(ctx: MethodContext) -> MethodResult:
    from shedkit.selectors.learnability import select_by_score

    if ctx.method == "filtered-random":
        return run_filtered_random(ctx)
    groups = group_labels(ctx.records, ctx.option("quota_by"), ctx.option("quota"))
    order = str(ctx.option("ifd_order", "low"))
    if order not in ("low", "high"):
        raise ShedkitError(f"--ifd-order must be 'low' or 'high', not {order!r}")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    loss, loss_info = base_loss_column(ctx)
    timings["base_losses"] = time.perf_counter() - t0
    columns: dict[str, Sequence[Any]] = {"loss_base": loss.tolist()}
    info: dict[str, Any] = {"model": str(ctx.option("model", DEFAULT_MODEL)), "base_losses": loss_info}
    dropped = np.zeros(len(ctx.records), dtype=bool)
    if ctx.method == "lowest-loss":
        scores = -loss
    else:
        t0 = time.perf_counter()
        alone, alone_info = response_alone_losses(ctx)
        timings["response_alone_losses"] = time.perf_counter() - t0
        ifd = ifd_ratio(loss, alone)
        columns.update(loss_alone=alone.tolist(), ifd=ifd.tolist())
        scores = -ifd if order == "low" else ifd.copy()
        if bool(ctx.option("ifd_drop_ge1", False)):
            with np.errstate(invalid="ignore"):
                dropped = ifd >= 1
            scores[dropped] = np.nan
        info.update(ifd_order=order, ifd_drop_ge1=bool(ctx.option("ifd_drop_ge1", False)),
                    response_alone=alone_info, ifd_ge1_rows=int(np.sum(ifd >= 1)))
    easy, hard = float(ctx.option("easy_quantile", 0.0)), float(ctx.option("hard_quantile", 0.0))
    sel = select_by_score(scores, ctx.budget, guard_loss=loss, easy_quantile=easy, hard_quantile=hard,
                          groups=groups, quota=ctx.option("quota"))
    excluded = ["ifd>=1" if d else why for d, why in zip(dropped.tolist(), sel.excluded)]
    columns["excluded"] = excluded
    if groups is not None:
        columns["group"] = groups
    info.update(selection=sel.info(), guards={"easy_quantile": easy, "hard_quantile": hard})
    return MethodResult(selected=sel.selected, columns=columns, info=info, timings=timings)


def plan(p) -> list:
    """--dry-run: the model loaded, its losses over the pool (and IFD's response-alone
    losses), the rows picked (see ``pipeline/planning.py``)."""
    from shedkit.pipeline.plan_data import select_stage
    from shedkit.pipeline.plan_models import load_model_stage, loss_stage

    ctx = p.ctx
    if ctx.method != "filtered-random":
        group_labels(ctx.records, ctx.option("quota_by"), ctx.option("quota"))
    stages = [load_model_stage(p), loss_stage(p, "base_losses", "the base model's response loss of every row")]
    if ctx.method != "lowest-loss":
        stages.append(loss_stage(p, "response_alone_losses", "IFD's denominator: each last response's loss alone",
                                 kind="alone"))
    what = {"lowest-loss": "the lowest-loss rows", "ifd": "rows by IFD",
            "filtered-random": "a random draw among the rows that pass the loss/IFD filter"}
    return stages + [select_stage(p, what.get(ctx.method, "the rows by score"))]


def run_filtered_random(ctx: MethodContext) -> MethodResult:
    from shedkit.selectors.hybrid import loss_ifd_score

    keep = float(ctx.option("filter_keep", 0.75))
    if not 0 < keep <= 1:
        raise ShedkitError(f"--filter-keep must be in (0, 1], got {keep}")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    loss, loss_info = base_loss_column(ctx)
    timings["base_losses"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    alone, alone_info = response_alone_losses(ctx)
    timings["response_alone_losses"] = time.perf_counter() - t0
    ifd = ifd_ratio(loss, alone)
    score = loss_ifd_score(loss, ifd)
    scored = np.flatnonzero(np.isfinite(score))
    n_pass = int(np.ceil(keep * len(scored) - 1e-9))
    passed = scored[np.lexsort((scored, -score[scored]))][:n_pass]
    if n_pass < ctx.budget:
        raise ShedkitError(f"filtered-random: {n_pass} rows pass the filter (--filter-keep {keep} of "
                           f"{len(scored)} scored rows), fewer than the budget {ctx.budget}: raise --filter-keep")
    selected = np.random.default_rng(ctx.seed).choice(passed, size=ctx.budget, replace=False)
    is_pass = np.zeros(len(ctx.records), dtype=bool)
    is_pass[passed] = True
    excluded = ["undefined" if not np.isfinite(v) else ("" if ok else "filtered") for v, ok in zip(score, is_pass)]
    columns = {"loss_base": loss.tolist(), "loss_alone": alone.tolist(), "ifd": ifd.tolist(),
               "filter_score": score.tolist(), "excluded": excluded}
    info = {"model": str(ctx.option("model", DEFAULT_MODEL)), "base_losses": loss_info, "response_alone": alone_info,
            "filter_keep": keep, "passed": n_pass, "scored": int(len(scored))}
    return MethodResult(selected=np.sort(selected), columns=columns, info=info, timings=timings)
