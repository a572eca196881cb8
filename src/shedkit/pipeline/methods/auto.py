"""--method auto: the recommended method, a named preset fixed before it was tested out of sample.

``auto`` is the preset ``AUTO`` points at; every preset can also be asked for by its own name
(``--method recommended-v1``), so results stay reproducible when ``auto`` moves on. A preset
is frozen once committed: its method and settings never change. A better choice becomes a
*new* preset (``recommended-v2``) that has to prove itself on a suite it was not chosen on.

recommended-v1 = filtered-random, filter_keep 0.75 (chosen on noisy-mix-v1 only, before
noisy-mix-v2 existed; docs/recommended.md has the evidence and the pre-registration).
In short: of every selection measured on noisy-mix-v1 (LoRA recipe, 3-7 seeds), filtered-random
is the only one that is better than random on all three test targets (Alpaca loss 1.812 vs
1.817, GSM8K loss 0.861 vs 0.874, ARC-Easy 0.528 vs 0.512) and worse on none; the rows that
gain more on the Alpaca target (shed-hybrid-filter, first-order, DSIR) get it by pulling the
source mix towards their dev target and pay on another target; it reads no target, so it
cannot over-fit a user's dev set; and it costs two forward passes of the proxy model over the
pool (no fine-tunes). Its filter was designed on noisy-mix-v1's labels, which is exactly why
it must be judged on another suite.

The preset's own settings are fixed: an option that would change *which* rows are chosen
(``filter_keep``, a target) is not an option of ``auto``; how rows are scored (model, device,
precision, max_length, batch sizes, shard size, backend and workers) may be set. The manifest records the preset under
``method.preset``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from shedkit.errors import ShedkitError
from shedkit.pipeline.methods.base import MethodContext, MethodResult
from shedkit.pipeline.options import (BackendOptions, CommonOptions, DeviceOptions, ModelOptions, ScoreOptions,
                                      TrainOptions)


@dataclass(frozen=True)
class Preset:
    name: str
    method: str  # a registered method
    settings: dict[str, Any] = field(default_factory=dict)  # fixed options of that method
    chosen_on: str = ""  # the suite the choice was made on
    reason: str = ""


PRESETS: dict[str, Preset] = {
    "recommended-v1": Preset(
        name="recommended-v1", method="filtered-random", settings={"filter_keep": 0.75}, chosen_on="noisy-mix-v1",
        reason="the only selection on noisy-mix-v1 better than random on every test target (Alpaca, GSM8K, "
               "ARC-Easy) and worse on none; target-free (no source-mix drift); two proxy forward passes, "
               "no fine-tunes (docs/recommended.md)"),
}
AUTO = "recommended-v1"  # what --method auto runs
VERSION = "1"  # bump only if the delegation itself changes; a preset's settings never change


@dataclass
class Options(CommonOptions, DeviceOptions, ModelOptions, TrainOptions, ScoreOptions, BackendOptions):
    """How rows are scored (and where: ``backend``); not which rows are kept (the preset fixes that)."""


def preset_for(method: str) -> Preset:
    """The preset ``--method auto`` (or a preset's own name) runs."""
    name = AUTO if method in ("auto", "") else method
    if name not in PRESETS:
        raise ShedkitError(f"no preset named {method!r}; presets: auto, {', '.join(PRESETS)}")
    return PRESETS[name]


def plan(p) -> list:
    """--dry-run: the plan of the preset's method with the preset's settings."""
    from shedkit.pipeline.methods import method_module

    preset = preset_for(p.ctx.method)
    delegate = replace(p.ctx, method=preset.method, options={**p.ctx.options, **preset.settings})
    return method_module(preset.method).plan(p.with_ctx(delegate))


def run(ctx: MethodContext) -> MethodResult:
    from shedkit.pipeline.methods import method_module

    preset = preset_for(ctx.method)
    delegate = replace(ctx, method=preset.method, options={**ctx.options, **preset.settings})
    result = method_module(preset.method).run(delegate)
    result.info = {"preset": {"asked": ctx.method, "name": preset.name, "method": preset.method,
                              "settings": dict(preset.settings), "chosen_on": preset.chosen_on,
                              "reason": preset.reason}, **result.info}
    return result
