"""Valuation of proxies: a utility (cached v(S)), a sampler, a marginal rule (with optional
truncation) and stopping rules, composed by a valuation's ``fit`` into a ``ValuationResult``.

    utility.py            Utility, CachedUtility, ScoreFunction: subset -> score, cached
    samplers.py           PermutationSampler, AntitheticSampler, Uniform/StratifiedSubsetSampler
    marginals.py          AddOne, RemoveK (SHED), Relative/AbsoluteTruncation, GameContext
    stopping.py           MaxPermutations, MaxEvaluations, MaxTime, StandardErrorBelow, ...
    engine.py             EvaluationLoop: one evaluation (fine-tune) at a time, stops between
    estimators.py         Valuation, PermutationValuation and its presets (shed, mc, tmc, ...)
    subset_valuations.py  MSRBanzhaf, StratifiedShapley, ControlVariateShapley, RegressionShapley
    result.py             ValuationResult (marginals or plain values; merge; save/load)
    registry.py           get_valuation(name): lazy "module:Class" entries
    games.py              games with known values, for tests and benchmarks

No torch here: the fine-tune score function lives in ``shedkit.models`` and is passed in.
"""

from shedkit.execute.jobs import hash_settings
from shedkit.value.estimators import (
    AntitheticMonteCarlo,
    PermutationEstimator,
    PermutationMonteCarlo,
    PermutationValuation,
    ShedRemoval,
    TruncatedMonteCarlo,
    Valuation,
    estimate_values,
    make_estimator,
)
from shedkit.value.marginals import AbsoluteTruncation, AddOne, RelativeTruncation, RemoveK
from shedkit.value.samplers import (
    AntitheticSampler,
    PermutationSampler,
    StratifiedSubsetSampler,
    UniformSubsetSampler,
)
from shedkit.value.subset_valuations import (
    ControlVariateShapley,
    MSRBanzhaf,
    RegressionShapley,
    StratifiedShapley,
)
from shedkit.value.games import (
    AdditiveGame,
    GloveGame,
    ProxyLikeGame,
    RandomGame,
    exact_banzhaf,
    exact_shapley,
)
from shedkit.value.result import ValuationResult, spearman
from shedkit.value.stopping import (
    MaxEvaluations,
    MaxFineTunes,
    MaxPermutations,
    MaxTime,
    Progress,
    HardCap,
    RankStability,
    StandardErrorBelow,
    StoppingRule,
    build_stopping_rule,
    describe_stopping,
)
from shedkit.value.registry import VALUATIONS, get_valuation, register_valuation
from shedkit.value.utility import CachedUtility, FunctionUtility, ScoreFunction, Utility

__all__ = [
    "AbsoluteTruncation",
    "AddOne",
    "AntitheticSampler",
    "ControlVariateShapley",
    "HardCap",
    "MSRBanzhaf",
    "PermutationSampler",
    "PermutationValuation",
    "RegressionShapley",
    "RelativeTruncation",
    "RemoveK",
    "StratifiedShapley",
    "StratifiedSubsetSampler",
    "UniformSubsetSampler",
    "Valuation",
    "describe_stopping",
    "exact_banzhaf",
    "AdditiveGame",
    "AntitheticMonteCarlo",
    "CachedUtility",
    "FunctionUtility",
    "GloveGame",
    "MaxEvaluations",
    "MaxFineTunes",
    "MaxPermutations",
    "MaxTime",
    "PermutationEstimator",
    "PermutationMonteCarlo",
    "Progress",
    "ProxyLikeGame",
    "RandomGame",
    "RankStability",
    "ScoreFunction",
    "ShedRemoval",
    "StandardErrorBelow",
    "StoppingRule",
    "TruncatedMonteCarlo",
    "Utility",
    "ValuationResult",
    "build_stopping_rule",
    "estimate_values",
    "exact_shapley",
    "hash_settings",
    "make_estimator",
    "register_valuation",
    "get_valuation",
    "VALUATIONS",
    "spearman",
]
