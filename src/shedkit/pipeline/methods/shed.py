"""--method shed-qocs | shed-qwcs: cluster, value the proxies by Shapley, sample by value.

1. cluster the pool and pick one proxy per cluster (``shed_sampling.clustering_for``);
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
("sequential"), ``workers``, ``ray_address``, and the fine-tune settings ``epochs``, ``lr``,
``max_length``, ``precision`` (see ``shedkit.models.TrainConfig``).
"""

from __future__ import annotations

import time

import numpy as np

from shedkit.errors import ShedkitError
from shedkit.pipeline.methods.base import MethodContext, MethodResult
from shedkit.pipeline.methods.shed_sampling import clustering_for, run_from_values, sampling_result, values_by_cluster

DEFAULT_MODEL = "smollm2-135m"
TRAIN_OPTIONS = ("epochs", "lr", "max_length", "precision", "batch_size", "lora_r")


def run(ctx: MethodContext) -> MethodResult:
    sampler = "qwcs" if ctx.method == "shed-qwcs" else "qocs"
    if ctx.option("values") is not None:
        return run_from_values(ctx, sampler)
    if ctx.option("cluster_value", "shapley") == "first-order":  # cluster values from row values
        from shedkit.pipeline.methods.shed_hybrid import run_shed_first_order

        return run_shed_first_order(ctx, sampler)
    dev = load_targets(ctx.option("target"))
    clustering = clustering_for(ctx)
    proxies = [ctx.records[i] for i in clustering.proxies.tolist()]
    t0 = time.perf_counter()
    valuation, utility_stats, settings = value_proxies(ctx, proxies, dev)
    seconds_value = time.perf_counter() - t0
    (ctx.run_dir / "work").mkdir(parents=True, exist_ok=True)
    valuation.save(ctx.run_dir / "work" / "valuation.json")
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
    )
    result.timings["value"] = seconds_value
    return result


def load_targets(targets) -> "object":
    """One DevSet from one or more target files of the same kind (loss rows or MC items)."""
    from shedkit.models import DevSet, read_dev

    if not targets:
        raise ShedkitError("SHED needs a target dev set: --target FILE (Alpaca-style rows or {query, choices, gold})")
    paths = [targets] if isinstance(targets, (str, bytes)) or not hasattr(targets, "__iter__") else list(targets)
    devs = [read_dev(p) for p in paths]
    if len(devs) == 1:
        return devs[0]
    if len({d.kind for d in devs}) != 1:
        raise ShedkitError("all --target files must be of one kind (all loss rows or all multiple-choice)")
    return DevSet(
        records=tuple(r for d in devs for r in d.records), items=tuple(i for d in devs for i in d.items),
        source="+".join(str(p) for p in paths),
    )


def value_proxies(ctx: MethodContext, proxies, dev):
    """Shapley values of the proxies (keyed by record id) and the fine-tune counts."""
    from shedkit.models import SubsetScore, TrainConfig
    from shedkit.value import CachedUtility, build_stopping_rule, estimate_values

    train = {k: ctx.option(k) for k in TRAIN_OPTIONS if ctx.option(k) is not None}
    if "epochs" in train:
        train["epochs"] = float(train["epochs"])
    if ctx.option("train_method") is not None:
        train["method"] = ctx.option("train_method")
    train_config = TrainConfig(**train)
    model = ctx.option("model", DEFAULT_MODEL)
    score = SubsetScore(model, proxies, dev, train_config, ctx.option("objective", "auto"), seed=ctx.seed)
    settings_hash = score.settings_hash()
    utility = CachedUtility(score, ctx.cache_dir / "utility", settings_hash, players=[p.id for p in proxies])
    stop = build_stopping_rule(
        permutations=ctx.option("permutations"), max_evals=ctx.option("max_evals"),
        max_time=ctx.option("max_time"), stderr_threshold=ctx.option("stderr_threshold"),
        rank_stability=ctx.option("rank_stability"),
    )
    estimator = ctx.option("estimator", "shed")
    params = {}
    if estimator == "shed":
        params = {"removal_k": int(ctx.option("removal_k", 1)), "group_credit": ctx.option("group_credit", "split")}
    elif estimator == "tmc" and ctx.option("tmc_rtol") is not None:
        params = {"rtol": float(ctx.option("tmc_rtol"))}
    backend_options = {"workers": ctx.option("workers"), "address": ctx.option("ray_address")}
    from shedkit.execute.backends import get_backend

    backend_name = ctx.option("backend", "sequential")
    backend = get_backend(backend_name, **{k: v for k, v in backend_options.items()
                                           if v is not None and not (k == "address" and backend_name != "ray")})
    try:
        valuation = estimate_values(utility, estimator, players=[p.id for p in proxies], backend=backend,
                                    stop=stop, seed=ctx.seed, progress=True, **params)
    finally:
        backend.close()
    settings = {
        "model": model, "objective": score.objective.to_dict(), "dev": dev.source, "dev_rows": len(dev),
        "train": train_config.to_dict(), "settings_hash": settings_hash, "backend": backend_name,
        "stopping": str(stop),
    }
    return valuation, utility.stats(), settings


def valuation_info(valuation) -> dict:
    data = valuation.to_dict()
    keep = ("estimator", "params", "seed", "stopped_by", "n_permutations", "n_evaluations",
            "n_computed", "n_reused", "v_empty", "v_full", "elapsed")
    info = {k: data[k] for k in keep if k in data}
    info["rank_stability"] = float(valuation.rank_stability()) if valuation.n_permutations >= 2 else None
    info["mean_stderr"] = float(np.mean(valuation.stderr)) if len(valuation.stderr) else None
    return info
