"""--method full: the whole pool (the reference every subset is compared with)."""

from __future__ import annotations

import numpy as np

from shedkit.pipeline.methods.base import MethodContext, MethodResult


def run(ctx: MethodContext) -> MethodResult:
    return MethodResult(selected=np.arange(len(ctx.records)))
