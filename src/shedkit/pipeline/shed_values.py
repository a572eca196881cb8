"""SHED's step 2 (shed-qocs, shed-qwcs, shed-hybrid's ``--cluster-value shapley``): Shapley
values of the cluster proxies, v(S) = dev score of the base model fine-tuned on proxies S, with
the chosen estimator and stopping rules, on the chosen backend. Each v(S) is cached on disk per
subset + settings, so a rerun or a resumed run fine-tunes nothing twice; the stage's result is
kept in the run's ``work/`` directory."""

from __future__ import annotations

import sys

import numpy as np

from shedkit.errors import ShedkitError
from shedkit.pipeline.backends import backend_options_for
from shedkit.pipeline.methods.base import MethodContext
from shedkit.pipeline.options import train_config_from
from shedkit.util.defaults import DEFAULT_MODEL

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


def _valuation(ctx: MethodContext, proxies, dev) -> dict:
    """What valuing ``proxies`` against ``dev`` needs (the score, its cache, the estimator and
    its stopping rule, the backend's name and options), shared by :func:`value_proxies` and
    :func:`valuation_plan`."""
    from shedkit.models import Objective, ScoreConfig, SubsetScore
    from shedkit.value import CachedUtility, build_stopping_rule, make_estimator

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
    check_a_permutation_fits(estimator, stop, len(players))
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
    return {"utility": utility, "stop": stop, "estimator": estimator, "players": players, "backend": backend_name,
            "backend_options": backend_options, "settings": settings, "stage": stage}


def check_a_permutation_fits(estimator, stop, n_players: int) -> None:
    """A cap on evaluations below one whole permutation leaves every proxy without a value:
    say so before the first fine-tune, not after the last. (Truncated walks may end early, and
    the other estimators sample differently: those are checked after the fit.)"""
    from shedkit.value.estimators import PermutationValuation

    if not isinstance(estimator, PermutationValuation) or estimator.truncation:
        return
    per = estimator.evaluations_per_permutation(n_players)
    planned = stop.planned_evaluations(per, 2)
    if planned is not None and planned < per + 2:
        raise ShedkitError(
            f"the stopping rule ({stop}) allows {int(planned)} fine-tunes, but one permutation over {n_players} "
            f"proxies takes {int(per) + 2} (∅, the full set and {int(per)} more): no proxy would get a value. "
            f"Raise --max-evals to at least {int(per) + 2}, or value fewer proxies (--clusters) or remove "
            "several at a time (--removal-k)")


def check_some_value(valuation) -> None:
    """Every value NaN (the rule stopped before any sample finished): a clear error, not a
    sampler's complaint about NaN values later."""
    if not np.isfinite(np.asarray(valuation.values, dtype=float)).any():
        raise ShedkitError(
            f"the valuation stopped ({valuation.stopped_by or 'its stopping rule'}) before any sample finished: "
            f"no proxy has a value. Its {valuation.n_computed} new fine-tunes are cached; rerun with a larger "
            "--max-evals or --max-time to go on from them")


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
    ``--dry-run`` never gets here: it plans the stage with :func:`valuation_plan`."""
    from shedkit.data.containers import atomic_write_json
    from shedkit.value import describe_stopping

    v = _valuation(ctx, proxies, dev)
    utility, estimator, players, stage = v["utility"], v["estimator"], v["players"], v["stage"]
    work = ctx.run_dir / "work"
    finished = _load_finished_valuation(work, stage)
    if finished is not None:
        return finished, {**utility.stats(), "stage": "loaded from " + str(work / VALUATION)}, v["settings"]
    from shedkit.execute.backends import get_backend

    backend = get_backend(v["backend"], **v["backend_options"])
    try:
        print(describe_stopping(v["stop"], estimator.evaluations_per_permutation(len(players))), file=sys.stderr)
        valuation = estimator.fit(utility, players=players, backend=backend).result_
    finally:
        backend.close()
    check_some_value(valuation)
    work.mkdir(parents=True, exist_ok=True)
    (work / VALUATION_DONE).unlink(missing_ok=True)
    valuation.save(work / VALUATION)
    atomic_write_json(work / VALUATION_DONE, stage)
    return valuation, utility.stats(), v["settings"]


def valuation_plan(ctx: MethodContext, proxies, dev) -> dict:
    """SHED's ``--dry-run`` stage: the fine-tunes the estimator and stopping rules allow
    (``plan_run``), one of them timed for real (stored in the v(S) cache, so it is not wasted;
    an entry already cached gives its recorded time) and the estimated wall time on the
    backend's workers."""
    from shedkit.execute.backends import get_backend
    from shedkit.value import describe_stopping
    from shedkit.value.planning import estimate_wall_time, plan_run, time_one_evaluation

    v = _valuation(ctx, proxies, dev)
    backend = get_backend(v["backend"], **v["backend_options"])
    try:
        print(describe_stopping(v["stop"], v["estimator"].evaluations_per_permutation(len(v["players"]))),
              file=sys.stderr)
        plan = plan_run(v["estimator"], len(v["players"]), backend.parallelism)
    finally:
        backend.close()
    plan["timing"] = time_one_evaluation(v["utility"], v["players"], seed=ctx.seed)
    plan["estimated_seconds"] = estimate_wall_time(plan, plan["timing"]["seconds"])
    return plan


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
