"""--method full: the whole pool (the reference every subset is compared with)."""

from __future__ import annotations

import numpy as np

from shedkit.pipeline.methods.base import MethodContext, MethodResult
from shedkit.pipeline.options import CommonOptions


Options = CommonOptions  # the whole pool: nothing to choose


def run(ctx: MethodContext) -> MethodResult:
    return MethodResult(selected=np.arange(len(ctx.records)))


def plan(p) -> list:
    """--dry-run: the stages of ``run`` (see ``pipeline/planning.py``)."""
    from shedkit.pipeline.plan_data import select_stage

    return [select_stage(p, "take every row")]
