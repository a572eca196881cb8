"""--method random: uniform without replacement, seeded."""

from __future__ import annotations

import numpy as np

from shedkit.pipeline.methods.base import MethodContext, MethodResult
from shedkit.pipeline.options import CommonOptions
from shedkit.selectors.random import random_sample


Options = CommonOptions  # random sampling takes nothing but the seed


def run(ctx: MethodContext) -> MethodResult:
    rng = np.random.default_rng(ctx.seed)
    return MethodResult(selected=random_sample(len(ctx.records), ctx.budget, rng))


def plan(p) -> list:
    """--dry-run: the stages of ``run`` (see ``pipeline/planning.py``)."""
    from shedkit.pipeline.plan_data import select_stage

    return [select_stage(p, "draw the budget uniformly at random (seeded)")]
