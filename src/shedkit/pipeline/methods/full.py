"""--method full: the whole pool (the reference every subset is compared with)."""

from __future__ import annotations

import numpy as np

from shedkit.pipeline.methods.base import MethodContext, MethodResult
from shedkit.pipeline.options import CommonOptions


Options = CommonOptions  # the whole pool: nothing to choose


def run(ctx: MethodContext) -> MethodResult:
    return MethodResult(selected=np.arange(len(ctx.records)))
