"""--method shed-hybrid: SHED's cluster values decide how many rows each cluster gets; inside a
cluster rows go best-first by a row score.

1. cluster the pool (``cluster_sampling.clustering_for``, shared with SHED);
2. cluster values: ``cluster_value`` "shapley" (default: SHED's proxy fine-tunes, the same
   cached v(S) as shed-qocs/shed-qwcs), "first-order" (the sum or mean -- ``cluster_value_reduce``
   -- of the first-order values of the cluster's rows: no extra fine-tune), or a
   ``values`` file (cluster,value CSV);
3. allocation by ``sampler`` "qocs" (default) or "qwcs" (``temperature`` as for SHED), rows
   best-first by ``row_score``: "first-order" (default), "learnability" (LoBaSS, with its
   reference fine-tune), "ifd" (lowest IFD first), "loss" (lowest base loss first),
   "loss-ifd" (minus the larger of the row's pool percentiles by base loss and by IFD: high
   on neither), or "random" (SHED's own uniform sampling, row for row at the same seed).
   ``row_keep`` q < 1 keeps only the best ceil(q m) scored rows of each cluster;
   ``row_order`` "random" takes the kept rows in random order (the score only filters; see
   ``selectors.hybrid``).

scores.csv: ``cluster``, ``is_proxy``, ``cluster_value``, ``row_score``, ``cluster_taken`` (rows
selected from the row's cluster), ``left_out`` (why an unselected row was not taken), plus the
score's own columns (``first_order*``, ``loss_base``, ``ifd``, ``learnability``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from dataclasses import dataclass
from typing import Optional

from shedkit.errors import ShedkitError
from shedkit.pipeline.cluster_sampling import clustering_for, values_by_cluster
from shedkit.pipeline.first_order_values import (first_order_cluster_values, first_order_columns, first_order_fit,
                                                 first_order_info)
from shedkit.pipeline.methods.base import MethodContext, MethodResult
from shedkit.pipeline.options import ScoreOptions, ShedOptions, opt, train_config_from
from shedkit.pipeline.reference_model import reference_model
from shedkit.pipeline.row_scores import (base_loss_column, ifd_ratio, model_losses, response_alone_losses,
                                         score_config_from)
from shedkit.pipeline.shed_values import valuation_info, value_proxies
from shedkit.pipeline.targets import load_targets
from shedkit.selectors.hybrid import ROW_ORDERS, ROW_SCORES, loss_ifd_score
from shedkit.util.defaults import DEFAULT_MODEL


@dataclass
class Options(ShedOptions, ScoreOptions):
    """SHED's options (clusters, cluster values, valuation, fine-tunes) plus the row-level ones."""

    sampler: Optional[str] = opt("shed-hybrid: qocs (default) or qwcs allocation of rows to clusters.")
    row_score: Optional[str] = opt("shed-hybrid: first-order (default) | learnability | ifd | loss | loss-ifd | random (= SHED).")
    row_keep: Optional[float] = opt("shed-hybrid: keep only this best share of each cluster's rows (default 1).")
    row_order: Optional[str] = opt("shed-hybrid: best (default: best-first by the row score) | random (the kept rows in random order: the score only filters).")
    reference: Optional[str] = opt("LoBaSS reference model/adapter path (default: fine-tune on the pool).")
    checkpoint_every: Optional[int] = opt("Checkpoint the reference fine-tune every N optimiser steps (default 50; 0 disables); a killed run resumes there.")

CLUSTER_VALUES = ("shapley", "first-order")


def _settings(ctx: MethodContext) -> tuple[str, str, str, str]:
    """``(sampler, row_score, row_order, cluster value source)``, checked."""
    sampler = str(ctx.option("sampler", "qocs"))
    row_score = str(ctx.option("row_score", "first-order"))
    row_order = str(ctx.option("row_order", "best"))
    source = "file" if ctx.option("values") is not None else str(ctx.option("cluster_value", "shapley"))
    if sampler not in ("qocs", "qwcs"):
        raise ShedkitError(f"--sampler must be 'qocs' or 'qwcs', not {sampler!r}")
    if row_score not in ROW_SCORES:
        raise ShedkitError(f"--row-score must be one of {', '.join(ROW_SCORES)}, not {row_score!r}")
    if row_order not in ROW_ORDERS:
        raise ShedkitError(f"--row-order must be one of {', '.join(ROW_ORDERS)}, not {row_order!r}")
    if row_order == "random" and (row_score == "random" or float(ctx.option("row_keep", 1.0)) >= 1):
        raise ShedkitError("--row-order random only changes anything with a row score and --row-keep < 1 "
                           "(it samples the rows that pass the score's filter)")
    if source not in (*CLUSTER_VALUES, "file"):
        raise ShedkitError(f"--cluster-value must be one of {', '.join(CLUSTER_VALUES)}, not {source!r}")
    return sampler, row_score, row_order, source


def plan(p) -> list:
    """--dry-run: clustering, the cluster values and row scores this configuration computes,
    the allocation (see ``pipeline/planning.py``)."""
    from shedkit.pipeline.plan_data import clustering_stages, select_stage
    from shedkit.pipeline.plan_models import load_model_stage, loss_stage
    from shedkit.pipeline.plan_training import first_order_stages, proxy_fine_tunes_stage, reference_stages

    sampler, row_score, _, source = _settings(p.ctx)
    if source == "shapley" or row_score == "first-order" or source == "first-order":
        load_targets(p.option("target"))  # fail on a missing target before any model work
    clustering, proxies, proxies_from = clustering_stages(p)
    stages = list(clustering)
    if row_score != "random" or source in CLUSTER_VALUES:
        stages.append(load_model_stage(p))
    if row_score == "first-order" or source == "first-order":
        stages += first_order_stages(p)
    if source == "shapley":
        stages.append(proxy_fine_tunes_stage(p, proxies, proxies_from))
    if row_score in ("loss", "ifd", "loss-ifd", "learnability"):
        stages.append(loss_stage(p, "base_losses", "the base model's response loss of every row"))
    if row_score in ("ifd", "loss-ifd"):
        stages.append(loss_stage(p, "response_alone_losses", "IFD's denominator: each last response's loss alone",
                                 kind="alone"))
    if row_score == "learnability":
        stages += reference_stages(p)
    return stages + [select_stage(p, f"{sampler.upper()} allocation to clusters, rows by {row_score}", "sample")]


def run(ctx: MethodContext) -> MethodResult:
    from shedkit.selectors.hybrid import hybrid_select

    sampler, row_score, row_order, source = _settings(ctx)
    timings: dict[str, float] = {}
    info: dict[str, Any] = {"sampler": sampler, "row_score": row_score, "row_order": row_order,
                            "cluster_value": source}
    columns: dict[str, Any] = {}
    clustering = clustering_for(ctx)
    for stage in ("embed", "cluster"):
        if f"seconds_{stage}" in clustering.info:
            timings[stage] = float(clustering.info[f"seconds_{stage}"])

    fit = None
    if row_score == "first-order" or source == "first-order":
        t0 = time.perf_counter()
        fit = first_order_fit(ctx)
        timings["first_order"] = time.perf_counter() - t0
        columns.update(first_order_columns(fit))
        info["first_order"] = first_order_info(fit)

    t0 = time.perf_counter()
    cluster_values = _cluster_values(ctx, clustering, source, fit, info)
    timings["cluster_values"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = _row_scores(ctx, row_score, fit, columns, info)
    timings["row_scores"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    try:
        sel = hybrid_select(clustering.labels, cluster_values, ctx.budget, np.random.default_rng(ctx.seed), sampler,
                            row_scores=scores, row_keep=float(ctx.option("row_keep", 1.0)),
                            temperature=ctx.option("temperature"), row_order=row_order)
    except ValueError as exc:
        raise ShedkitError(f"shed-hybrid: {exc}") from exc
    timings["sample"] = time.perf_counter() - t0
    labels = clustering.labels
    value_of = np.array([cluster_values[c] for c in range(clustering.n_clusters)], dtype=np.float64)
    columns.update(
        cluster=labels.tolist(), is_proxy=clustering.is_proxy.tolist(), cluster_value=value_of[labels].tolist(),
        row_score=(scores.tolist() if scores is not None else [""] * len(labels)),
        cluster_taken=[sel.allocation[int(c)] for c in labels], left_out=sel.left_out,
    )
    info.update(n_clusters=clustering.n_clusters, row_keep=float(ctx.option("row_keep", 1.0)), selection=sel.info(),
                **{f"clustering_{k}": v for k, v in clustering.info.items() if k != "settings"})
    return MethodResult(selected=sel.selected, columns=columns, info=info, timings=timings)


def _cluster_values(ctx: MethodContext, clustering, source: str, fit, info: dict) -> dict[int, float]:
    if source == "file":
        from shedkit.selectors.samplers import read_cluster_values

        info["values_file"] = str(ctx.option("values"))
        return read_cluster_values(ctx.option("values"))
    if source == "first-order":
        reduce = str(ctx.option("cluster_value_reduce", "sum"))
        info["cluster_value_reduce"] = reduce
        return first_order_cluster_values(clustering.labels, fit.result_.values, clustering.n_clusters, reduce)
    proxies = [ctx.records[i] for i in clustering.proxies.tolist()]
    valuation, utility_stats, settings = value_proxies(ctx, proxies, load_targets(ctx.option("target")))
    (ctx.run_dir / "work").mkdir(parents=True, exist_ok=True)
    valuation.save(ctx.run_dir / "work" / "valuation.json")
    info.update(estimator=valuation_info(valuation), fine_tunes=utility_stats, value_settings=settings)
    return values_by_cluster(clustering, ctx.records, valuation.as_dict())


def _row_scores(ctx: MethodContext, row_score: str, fit, columns: dict, info: dict):
    """Higher = taken first; NaN = never taken; None = random order (SHED's)."""
    if row_score == "random":
        return None
    if row_score == "first-order":
        return np.asarray(fit.result_.values, dtype=np.float64)
    loss, loss_info = base_loss_column(ctx)
    columns["loss_base"] = loss.tolist()
    info["base_losses"] = loss_info
    if row_score == "loss":
        return -loss
    if row_score in ("ifd", "loss-ifd"):
        alone, alone_info = response_alone_losses(ctx)
        ifd = ifd_ratio(loss, alone)
        columns["ifd"] = ifd.tolist()
        info["response_alone"] = alone_info
        if row_score == "ifd":
            return -ifd
        return loss_ifd_score(loss, ifd)
    # learnability: LoBaSS's reference model and scores
    from shedkit.models.loading import shared_model
    from shedkit.selectors.learnability import learnability

    spec = str(ctx.option("model", DEFAULT_MODEL))
    base, tok = shared_model(spec, device=ctx.option("device"))
    ref_model, ref_id, ref_info = reference_model(ctx, spec, base, tok, train_config_from(ctx))
    ref = model_losses(ref_model, tok, ctx, score_config_from(ctx), ref_id, ifd=False)
    scores = learnability(loss, ref.column("loss", len(ctx.records)))
    columns["learnability"] = scores.tolist()
    info["reference"] = ref_info
    return scores
