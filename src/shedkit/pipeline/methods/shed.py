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

import sys
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
    """Shapley values of the proxies (keyed by record id) and the fine-tune counts.

    Estimator options: ``estimator`` (shed | mc | tmc | antithetic | msr | stratified | cv |
    regression),
    ``removal_k``/``group_credit`` (shed), ``tmc_rtol`` (tmc), ``truncation`` (relative
    tolerance, any permutation estimator; for shed a walk stops once v(S) is that close to
    v(∅)), ``antithetic`` (any permutation estimator), ``surrogate`` (cv: a JSON {proxy id:
    value} or CSV id,value file; default a linear model fitted on the fine-tunes so far).
    With ``dry_run`` it prints the planned fine-tunes, times one real fine-tune, prints the
    estimated wall time and raises ``DryRunFinished``.
    """
    from shedkit.models import SubsetScore, TrainConfig
    from shedkit.value import CachedUtility, build_stopping_rule, describe_stopping, make_estimator

    train = {k: ctx.option(k) for k in TRAIN_OPTIONS if ctx.option(k) is not None}
    if "epochs" in train:
        train["epochs"] = float(train["epochs"])
    if ctx.option("train_method") is not None:
        train["method"] = ctx.option("train_method")
    train_config = TrainConfig(**train)
    model = ctx.option("model", DEFAULT_MODEL)
    score = SubsetScore(model, proxies, dev, train_config, ctx.option("objective", "auto"), seed=ctx.seed)
    settings_hash = score.settings_hash
    settings_hash = settings_hash() if callable(settings_hash) else settings_hash  # method or property
    players = [p.id for p in proxies]
    utility = CachedUtility(score, ctx.cache_dir / "utility", settings_hash, players=players)
    stop = build_stopping_rule(
        permutations=ctx.option("permutations"), max_evals=ctx.option("max_evals"),
        max_time=ctx.option("max_time"), stderr_threshold=ctx.option("stderr_threshold"),
        rank_stability=ctx.option("rank_stability"),
    )
    name = ctx.option("estimator", "shed")
    estimator = make_estimator(name, stop=stop, seed=ctx.seed, progress=True, **estimator_params(ctx, name, players))
    backend_options = {"workers": ctx.option("workers"), "address": ctx.option("ray_address")}
    from shedkit.execute.backends import get_backend

    backend_name = ctx.option("backend", "sequential")
    backend = get_backend(backend_name, **{k: v for k, v in backend_options.items()
                                           if v is not None and not (k == "address" and backend_name != "ray")})
    try:
        print(describe_stopping(stop, estimator.evaluations_per_permutation(len(players))), file=sys.stderr)
        if ctx.option("dry_run"):
            dry_run(ctx, estimator, utility, players, backend)
        valuation = estimator.fit(utility, players=players, backend=backend).result_
    finally:
        backend.close()
    settings = {
        "model": model, "objective": score.objective.to_dict(), "dev": dev.source, "dev_rows": len(dev),
        "train": train_config.to_dict(), "settings_hash": settings_hash, "backend": backend_name,
        "stopping": str(stop),
    }
    return valuation, utility.stats(), settings


def estimator_params(ctx: MethodContext, name: str, players) -> dict:
    """The options of the chosen estimator; an option another estimator uses is an error."""
    permutation = ("shed", "mc", "tmc", "antithetic")
    params: dict = {}
    if name == "shed":
        params = {"removal_k": int(ctx.option("removal_k", 1)), "group_credit": ctx.option("group_credit", "split")}
    elif ctx.option("removal_k") is not None or ctx.option("group_credit") is not None:
        raise ShedkitError(f"--removal-k/--group-credit are for --estimator shed, not '{name}'")
    if ctx.option("tmc_rtol") is not None:
        if name != "tmc":
            raise ShedkitError(f"--tmc-rtol is for --estimator tmc; use --truncation with '{name}'")
        params["rtol"] = float(ctx.option("tmc_rtol"))
    for option in ("truncation", "antithetic"):
        if ctx.option(option) is None or ctx.option(option) is False:
            continue
        if name not in permutation:
            raise ShedkitError(f"--{option} applies to the permutation estimators ({', '.join(permutation)}), not '{name}'")
        if option == "truncation" and name == "tmc":
            params["rtol"] = float(ctx.option("truncation"))
        elif not (option == "antithetic" and name == "antithetic"):
            params[option] = float(ctx.option(option)) if option == "truncation" else True
    if ctx.option("surrogate") is not None:
        if name != "cv":
            raise ShedkitError(f"--surrogate is for --estimator cv, not '{name}'")
        params["surrogate"] = read_surrogate(ctx.option("surrogate"), players)
    return params


def read_surrogate(path, players) -> dict[str, float]:
    """Per-proxy surrogate values from a JSON object {id: value} or a CSV with id,value."""
    import csv
    import json
    from pathlib import Path

    path = Path(path)
    if path.suffix.lower() == ".json":
        data = {str(k): float(v) for k, v in json.loads(path.read_text()).items()}
    else:
        with open(path, newline="") as fh:
            data = {row["id"]: float(row["value"]) for row in csv.DictReader(fh)}
    missing = [p for p in players if p not in data]
    if missing:
        raise ShedkitError(f"{path}: no surrogate value for {len(missing)} proxy id(s), e.g. {missing[0]!r}")
    return {p: data[p] for p in players}


def dry_run(ctx: MethodContext, estimator, utility, players, backend) -> None:
    """Print the plan (fine-tunes, one timed for real, wall time), save it, and stop the run."""
    from shedkit.data.containers import atomic_write_json
    from shedkit.value.planning import (DryRunFinished, estimate_wall_time, format_plan, plan_run,
                                        time_one_evaluation)

    plan = plan_run(estimator, len(players), backend.parallelism)
    plan["timing"] = time_one_evaluation(utility, players, seed=ctx.seed)
    plan["estimated_seconds"] = estimate_wall_time(plan, plan["timing"]["seconds"])
    atomic_write_json(ctx.run_dir / "work" / "dry_run.json", plan)
    print(format_plan(plan), file=sys.stderr)
    raise DryRunFinished(plan)


def valuation_info(valuation) -> dict:
    data = valuation.to_dict()
    keep = ("estimator", "params", "seed", "stopped_by", "n_permutations", "n_evaluations",
            "n_computed", "n_reused", "v_empty", "v_full", "elapsed")
    info = {k: data[k] for k in keep if k in data}
    rho = float(valuation.rank_stability())
    info["rank_stability"] = rho if np.isfinite(rho) else None
    stderr = valuation.stderr
    info["mean_stderr"] = float(np.mean(stderr)) if len(stderr) and np.all(np.isfinite(stderr)) else None
    if valuation.is_plain:
        info["n_samples"] = valuation.n_samples
    return info
