"""--method shed-qocs | shed-qwcs: cluster, value the proxies by Shapley, sample by value.

1. cluster the pool and pick one proxy per cluster (``cluster_sampling.clustering_for``);
2. value the proxies: v(S) = dev score of the base model fine-tuned on proxies S (cached on
   disk per subset + settings, so a rerun or a resumed run fine-tunes nothing twice), with the
   chosen estimator and stopping rules, on the chosen backend;
3. sample clusters by their proxy's value (QOCS or QWCS).
With ``--values FILE`` step 2 is skipped. Options (None = default):
``model`` ("smollm2-135m"), ``target`` (required: dev file(s)), ``objective`` ("auto"),
``estimator`` ("shed"), ``removal_k`` (1), ``group_credit`` ("split": the k proxies removed
together share the drop, so values sum to v(full) − v(∅); "full" gives each the whole drop, as
the paper words it — same ranking when k divides K), ``tmc_rtol``, ``permutations`` (10 unless another cap is given),
``max_evals``, ``max_time``, ``stderr_threshold``, ``rank_stability``, ``backend``
("sequential"), ``workers``, ``ray_address``, and every fine-tune setting of
``shedkit.models.TrainConfig`` (``epochs``, ``lr``, ``max_length``, ``precision``, ...;
``train_method`` for its ``method``). The declaration is ``ShedOptions`` in ``pipeline/options.py``;
step 2 is ``pipeline/shed_values.py``.
"""

from __future__ import annotations

import time

from shedkit.pipeline.cluster_sampling import clustering_for, run_from_values, sampling_result, values_by_cluster
from shedkit.pipeline.first_order_values import (first_order_cluster_values, first_order_columns, first_order_fit,
                                                 first_order_info)
from shedkit.pipeline.methods.base import MethodContext, MethodResult
from shedkit.pipeline.options import ShedOptions
from shedkit.pipeline.shed_values import valuation_info, value_proxies
from shedkit.pipeline.targets import load_targets
from shedkit.util.defaults import DEFAULT_MODEL

Options = ShedOptions  # declared in pipeline/options.py: shed-hybrid's Options build on it


def run(ctx: MethodContext) -> MethodResult:
    sampler = "qwcs" if ctx.method == "shed-qwcs" else "qocs"
    if ctx.option("values") is not None:
        return run_from_values(ctx, sampler)
    if ctx.option("cluster_value", "shapley") == "first-order":  # cluster values from row values
        return run_shed_first_order(ctx, sampler)
    dev = load_targets(ctx.option("target"))
    clustering = clustering_for(ctx)
    proxies = [ctx.records[i] for i in clustering.proxies.tolist()]
    t0 = time.perf_counter()
    valuation, utility_stats, settings = value_proxies(ctx, proxies, dev)
    seconds_value = time.perf_counter() - t0
    cluster_values = values_by_cluster(clustering, ctx.records, valuation.as_dict())
    result = sampling_result(ctx, clustering, cluster_values, sampler)
    stderr = dict(zip(valuation.players, valuation.stderr.tolist()))
    counts = dict(zip(valuation.players, valuation.counts.tolist()))
    proxy_id = [ctx.records[i].id for i in clustering.proxies.tolist()]
    labels = clustering.labels
    result.columns["value_stderr"] = [stderr[proxy_id[c]] for c in labels]
    result.columns["value_count"] = [int(counts[proxy_id[c]]) for c in labels]
    result.info.update(
        estimator=valuation_info(valuation),
        fine_tunes=utility_stats,
        value_settings=settings,
        truncation=value_truncation(ctx, proxies, dev),
    )
    result.timings["value"] = seconds_value
    return result


def plan(p) -> list:
    """--dry-run: clustering (or the saved one), then the cluster values -- the proxies' fine-tunes
    (one timed for real), first-order values, or a values file -- and the sampling."""
    from shedkit.pipeline.plan_data import clustering_stages, select_stage
    from shedkit.pipeline.plan_models import load_model_stage
    from shedkit.pipeline.plan_training import first_order_stages, proxy_fine_tunes_stage

    sampler = "qwcs" if p.ctx.method == "shed-qwcs" else "qocs"
    values = "file" if p.option("values") is not None else p.option("cluster_value", "shapley")
    if values == "shapley":
        load_targets(p.option("target"))  # fail on a missing target before any model work
    clustering, proxies, proxies_from = clustering_stages(p)
    stages = list(clustering)
    if values == "first-order":
        stages += [load_model_stage(p), *first_order_stages(p)]
    elif values != "file":
        stages += [load_model_stage(p), proxy_fine_tunes_stage(p, proxies, proxies_from)]
    return stages + [select_stage(p, f"{sampler.upper()}: sample the budget from the clusters by value", "sample")]


def run_shed_first_order(ctx: MethodContext, sampler: str) -> MethodResult:
    """SHED (``--cluster-value first-order``): cluster values are sums or means of the rows'
    first-order values (no proxy fine-tunes), then SHED's own QOCS/QWCS sampling."""
    clustering = clustering_for(ctx)
    t0 = time.perf_counter()
    fit = first_order_fit(ctx)
    seconds = time.perf_counter() - t0
    reduce = str(ctx.option("cluster_value_reduce", "sum"))
    values = first_order_cluster_values(clustering.labels, fit.result_.values, clustering.n_clusters, reduce)
    result = sampling_result(ctx, clustering, values, sampler)
    result.columns.update(first_order_columns(fit))
    result.info.update(cluster_value="first-order", cluster_value_reduce=reduce, first_order=first_order_info(fit))
    result.timings["value"] = seconds
    return result


def value_truncation(ctx: MethodContext, proxies, dev) -> dict:
    """Rows cut to ``max_length`` in the value stage: the proxies as fine-tuned, the dev set as scored."""
    from shedkit.models import Objective, TrainConfig
    from shedkit.models.loading import shared_model
    from shedkit.models.truncation import dev_truncation, record_truncation

    train = TrainConfig(**{k: ctx.option(k) for k in ("max_length",) if ctx.option(k) is not None})
    objective = Objective.of(ctx.option("objective", "auto")).resolve(dev)
    _, tokenizer = shared_model(ctx.option("model", DEFAULT_MODEL), device="cpu")
    return {"value_fine_tunes": record_truncation(tokenizer, proxies, train.max_length, train.template),
            "value_dev": dev_truncation(tokenizer, dev, objective)}
