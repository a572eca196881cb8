"""Shapley values of proxies: utilities (cached v(S)), estimators, stopping rules, results.

No torch here: the fine-tune score function lives in ``shedkit.models`` and is passed in.
"""

from shedkit.execute.jobs import hash_settings
from shedkit.value.estimators import (
    ESTIMATORS,
    AntitheticMonteCarlo,
    PermutationEstimator,
    PermutationMonteCarlo,
    ShedRemoval,
    TruncatedMonteCarlo,
    estimate_values,
    make_estimator,
)
from shedkit.value.games import (
    AdditiveGame,
    GloveGame,
    ProxyLikeGame,
    RandomGame,
    exact_shapley,
)
from shedkit.value.result import ValuationResult, spearman
from shedkit.value.stopping import (
    MaxEvaluations,
    MaxFineTunes,
    MaxPermutations,
    MaxTime,
    Progress,
    RankStability,
    StandardErrorBelow,
    StoppingRule,
    build_stopping_rule,
)
from shedkit.value.utility import CachedUtility, FunctionUtility, ScoreFunction, Utility

__all__ = [
    "ESTIMATORS",
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
    "spearman",
]
