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
``train_method`` for its ``method``). The declaration is ``Options`` below.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Optional

import numpy as np

from shedkit.errors import ShedkitError
from shedkit.pipeline.methods.base import MethodContext, MethodResult
from shedkit.pipeline.options import (BackendOptions, ClusterValueOptions, ClusteringOptions, CommonOptions, ModelOptions,
                                      TrainOptions, ValuationOptions, opt, train_config_from)
from shedkit.pipeline.cluster_sampling import clustering_for, run_from_values, sampling_result, values_by_cluster
from shedkit.util.defaults import DEFAULT_MODEL



@dataclass
class Options(CommonOptions, ClusteringOptions, ModelOptions, ValuationOptions, TrainOptions, BackendOptions,
              ClusterValueOptions):
    values: Optional[Path] = opt("CSV of cluster,value: skip valuation and only sample.")
    temperature: Optional[float] = opt("QWCS softmax temperature (default from the values' spread).")


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


VALUATION = "valuation.json"
VALUATION_DONE = "valuation.done.json"


def value_seed(ctx: MethodContext) -> int:
    """The seed of the Shapley permutations and the proxy fine-tunes (``--value-seed``, else ``--seed``)."""
    given = ctx.option("value_seed")
    return int(ctx.seed if given is None else given)


def _load_finished_valuation(work, stage: dict):
    """The valuation a previous run of this stage finished with the same settings, or None."""
    import json

    from shedkit.value.result import ValuationResult

    try:
        if json.loads((work / VALUATION_DONE).read_text()) != stage:
            return None
        return ValuationResult.load(work / VALUATION)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def value_proxies(ctx: MethodContext, proxies, dev):
    """Shapley values of the proxies (keyed by record id) and the fine-tune counts.

    The stage's result is ``work/valuation.json``, written the moment valuation ends, then its
    completion marker ``work/valuation.done.json`` (the settings it was made with); a rerun with
    the same settings loads it instead of valuing again (each v(S) is also cached on its own,
    so an interrupted valuation resumes without repeating a finished fine-tune).

    Estimator options: ``estimator`` (shed | mc | tmc | antithetic | msr | stratified | cv |
    regression), ``removal_k``/``group_credit`` (shed), ``tmc_rtol`` (tmc), ``truncation`` (relative
    tolerance, any permutation estimator; for shed a walk stops once v(S) is that close to
    v(∅)), ``antithetic`` (any permutation estimator), ``surrogate`` (cv: a JSON {proxy id:
    value} or CSV id,value file; default a linear model fitted on the fine-tunes so far).
    With ``dry_run`` it prints the planned fine-tunes, times one real fine-tune, prints the
    estimated wall time and raises ``DryRunFinished``."""
    from shedkit.data.containers import atomic_write_json
    from shedkit.models import Objective, ScoreConfig, SubsetScore
    from shedkit.value import CachedUtility, build_stopping_rule, describe_stopping, make_estimator

    train_config = train_config_from(ctx)
    model = ctx.option("model", DEFAULT_MODEL)
    seed = value_seed(ctx)
    objective = Objective(ctx.option("objective", "auto"))
    if ctx.option("precision") is not None:  # --precision sets the dev scoring's precision too
        objective = Objective(objective.name, score=ScoreConfig(precision=ctx.option("precision")))
    score = SubsetScore(model, proxies, dev, train_config, objective, seed=seed, device=ctx.option("device"))
    settings_hash = score.settings_hash
    players = [p.id for p in proxies]
    utility = CachedUtility(score, ctx.cache_dir / "utility", settings_hash, players=players)
    stop = build_stopping_rule(
        permutations=ctx.option("permutations"), max_evals=ctx.option("max_evals"),
        max_time=ctx.option("max_time"), stderr_threshold=ctx.option("stderr_threshold"),
        rank_stability=ctx.option("rank_stability"),
    )
    estimator_name = ctx.option("estimator", "shed")
    params = estimator_params(ctx, estimator_name, players)
    estimator = make_estimator(estimator_name, stop=stop, seed=seed, progress=True, **params)
    backend_name = ctx.option("backend", "sequential")
    backend_options = backend_options_for(ctx, backend_name, score.runtime)
    settings = {
        "model": model, "objective": score.objective.to_dict(), "dev": dev.source, "dev_rows": len(dev),
        "train": score.train_config.to_dict(), "settings_hash": settings_hash, "backend": backend_name,
        "stopping": str(stop), "runtime": score.runtime, "value_seed": seed,
        **({"gpus_per_job": backend_options["gpus_per_job"]} if "gpus_per_job" in backend_options else {}),
    }
    stage = {"settings_hash": settings_hash, "estimator": estimator_name, "params": params, "stopping": str(stop),
             "seed": seed, "players": sorted(players)}
    work = ctx.run_dir / "work"
    finished = None if ctx.option("dry_run") else _load_finished_valuation(work, stage)
    if finished is not None:
        return finished, {**utility.stats(), "stage": "loaded from " + str(work / VALUATION)}, settings
    from shedkit.execute.backends import get_backend

    backend = get_backend(backend_name, **backend_options)
    try:
        print(describe_stopping(stop, estimator.evaluations_per_permutation(len(players))), file=sys.stderr)
        if ctx.option("dry_run"):
            dry_run(ctx, estimator, utility, players, backend)
        valuation = estimator.fit(utility, players=players, backend=backend).result_
    finally:
        backend.close()
    work.mkdir(parents=True, exist_ok=True)
    (work / VALUATION_DONE).unlink(missing_ok=True)
    valuation.save(work / VALUATION)
    atomic_write_json(work / VALUATION_DONE, stage)
    return valuation, utility.stats(), settings


def backend_options_for(ctx: MethodContext, backend_name: str, runtime: dict) -> dict:
    """Constructor options of the chosen backend from ``workers``, ``ray_address`` and
    ``gpus_per_job``; Ray jobs pinned to CUDA get one GPU each unless told otherwise (with 0,
    Ray hides the GPUs from its workers)."""
    options = {"workers": ctx.option("workers")}
    gpus = ctx.option("gpus_per_job")
    if backend_name == "ray":
        options["address"] = ctx.option("ray_address")
        if gpus is None:
            gpus = 1 if str(runtime.get("device", "")).startswith("cuda") else None
        options["gpus_per_job"] = None if gpus is None else float(gpus)
    elif gpus is not None:
        raise ShedkitError(f"--gpus-per-job is a Ray setting; it means nothing to --backend {backend_name}")
    return {k: v for k, v in options.items() if v is not None}


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
