"""--method lobass: learnability-based selection (Zhou et al., arXiv 2310.13008).

1. **reference model** -- the base model fine-tuned on the whole pool (LoRA, one epoch by
   default), or the user's ``reference`` (a directory written by ``save_finetuned``, any PEFT
   adapter directory, a full Hugging Face model directory, or a hub id). A trained reference
   is saved as safetensors under ``<cache_dir>/references/<key>`` (atomically, by the model
   layer's ``save_finetuned``), ``key`` = hash of the base model's identity, the training
   config, the pool's record ids in order, the seed and the model-layer version; a rerun with
   the same key loads it instead of training. Adapters are applied to the ``model`` given for
   this run (not to the base an adapter file names), so L_base and L_ref always compare the
   same base with and without the fine-tune; both are scored with the base's tokenizer
   (``pipeline/reference_model.py``, shared with shed-hybrid's learnability row score).
2. **losses** -- L_base and L_ref per row through the model layer's ``response_losses``
   (mean loss over the response tokens; multi-turn rows: every assistant turn), length-sorted
   batches, cached per (model, row id) under ``<cache_dir>/losses`` and resumable.
3. **selection** -- S = 1 - L_ref / L_base, top ``budget`` rows, with the guards and quotas of
   ``shedkit.selectors.learnability`` (ties by row position: deterministic). Rows with no
   defined score (an empty response, a non-finite loss, L_base <= 0) are never selected and
   are counted in ``manifest.json["method"]["skipped_rows"]``; their cells are empty.

Options (None = default): ``model`` ("smollm2-135m"), ``reference`` (None: train one),
``easy_quantile``/``hard_quantile`` (0: no guard), ``quota_by`` (a column of the pool rows),
``quota`` (["alpaca=0.7", "gsm8k=0.3"]; with ``quota_by`` alone the groups keep their pool
shares), ``ifd`` (False: also write the base model's IFD), ``device``; training: every
``TrainConfig`` field by name (``epochs``, ``lr``, ``max_length``, ``precision``,
``batch_size``, ``lora_r``, ...; ``train_method`` for its ``method``); scoring:
``max_length``, ``precision``, ``template`` and ``score_batch_size``, ``max_batch_tokens``;
``checkpoint_every`` (50: the reference fine-tune checkpoints every 50 optimiser steps and a
killed run resumes there, recorded as ``manifest["method"]["reference"]["resumed_from_step"]``;
0 disables).

scores.csv columns: ``loss_base``, ``loss_ref``, ``learnability``, ``excluded`` ("" or
undefined / easy / hard / no-quota), ``group`` (with ``quota_by``), ``ifd`` (with ``ifd``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from shedkit.errors import ShedkitError
from shedkit.pipeline.methods.base import MethodContext, MethodResult
from shedkit.pipeline.options import (CommonOptions, DeviceOptions, ModelOptions, RowGuardOptions, ScoreOptions,
                                      TrainOptions, opt, train_config_from)
from shedkit.pipeline.reference_model import reference_model
from shedkit.pipeline.row_scores import group_labels, model_losses, score_config_from
from shedkit.selectors.learnability import guard_masks, parse_quota, select_learnable
from shedkit.util.defaults import DEFAULT_MODEL


@dataclass
class Options(CommonOptions, DeviceOptions, ModelOptions, TrainOptions, ScoreOptions, RowGuardOptions):
    reference: Optional[str] = opt("LoBaSS reference model/adapter path (default: fine-tune on the pool).")
    ifd: Optional[bool] = opt("Also compute IFD (loss with / without the instruction) into scores.csv.", flags=("--ifd/--no-ifd",))
    checkpoint_every: Optional[int] = opt("Checkpoint the reference fine-tune every N optimiser steps (default 50; 0 disables); a killed run resumes there.")


def run(ctx: MethodContext) -> MethodResult:
    from shedkit.models.loading import model_identity, shared_model

    model_spec = str(ctx.option("model", DEFAULT_MODEL))
    train_config, score_config = train_config_from(ctx), score_config_from(ctx)
    groups = group_labels(ctx.records, ctx.option("quota_by"), ctx.option("quota"))
    precheck_budget(ctx)
    timings: dict[str, float] = {}
    device = ctx.option("device")

    t0 = time.perf_counter()
    base_model, tokenizer = shared_model(model_spec, device=device)
    base_id = model_identity(model_spec)
    ifd = bool(ctx.option("ifd", False))
    base = model_losses(base_model, tokenizer, ctx, score_config, base_id, ifd=ifd, spec=model_spec)
    timings["base_losses"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ref_model, ref_id, ref_info = reference_model(ctx, model_spec, base_model, tokenizer, train_config)
    timings["reference"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ref = model_losses(ref_model, tokenizer, ctx, score_config, ref_id, ifd=False)
    timings["ref_losses"] = time.perf_counter() - t0
    del ref_model

    n = len(ctx.records)
    loss_base, loss_ref = base.column("loss", n), ref.column("loss", n)
    sel = select_learnable(
        loss_base, loss_ref, ctx.budget,
        easy_quantile=float(ctx.option("easy_quantile", 0.0)), hard_quantile=float(ctx.option("hard_quantile", 0.0)),
        groups=groups, quota=ctx.option("quota"),
    )
    columns: dict[str, Sequence[Any]] = {
        "loss_base": loss_base, "loss_ref": loss_ref, "learnability": sel.scores, "excluded": sel.excluded,
    }
    if groups is not None:
        columns["group"] = groups
    if ifd:
        columns["ifd"] = base.column("ifd", n)
    undefined = [i for i, why in enumerate(sel.excluded) if why == "undefined"]
    info = {
        "model": model_spec,
        "reference": ref_info,
        "skipped_rows": len(undefined),
        "skipped_ids": [ctx.records[i].id for i in undefined[:20]],
        "losses": {
            "base": {"computed": len(base.ids) - base.cached, "cached": base.cached, "model_id": base_id},
            "ref": {"computed": len(ref.ids) - ref.cached, "cached": ref.cached, "model_id": ref_id},
        },
        "score_config": score_config.to_dict(),
        "truncation": lobass_truncation(tokenizer, ctx.records, train_config, score_config, ref_info),
        "guards": {"easy_quantile": float(ctx.option("easy_quantile", 0.0)),
                   "hard_quantile": float(ctx.option("hard_quantile", 0.0))},
        "selection": sel.info(),
    }
    if groups is not None:
        info["quota"] = {"by": ctx.option("quota_by"), "shares": parse_quota(ctx.option("quota")) or "pool shares"}
    return MethodResult(selected=sel.selected, columns=columns, info=info, timings=timings)


def plan(p) -> list:
    """--dry-run: the model loaded, its losses, the reference (trained, cached or given) and its
    losses, the rows picked (see ``pipeline/planning.py``)."""
    from shedkit.pipeline.plan_data import select_stage
    from shedkit.pipeline.plan_models import load_model_stage, loss_stage
    from shedkit.pipeline.plan_training import reference_stages

    group_labels(p.ctx.records, p.option("quota_by"), p.option("quota"))
    precheck_budget(p.ctx)
    return [load_model_stage(p),
            loss_stage(p, "base_losses", "the base model's response loss of every row",
                       ifd=bool(p.option("ifd", False))),
            *reference_stages(p), select_stage(p, "the most learnable rows (1 - L_ref / L_base)")]


def lobass_truncation(tokenizer, records, train_config, score_config, ref_info) -> dict:
    """Rows cut to ``max_length`` and tokens dropped, per stage (scoring and the reference fine-tune)."""
    from shedkit.models.truncation import record_truncation

    scored = record_truncation(tokenizer, records, score_config.max_length, score_config.template)
    out = {"base_losses": scored, "ref_losses": dict(scored)}
    if ref_info.get("source") != "user":
        out["reference_fine_tune"] = record_truncation(tokenizer, records, train_config.max_length, train_config.template)
    return out


def precheck_budget(ctx: MethodContext) -> None:
    """Fail before any model work when the guards alone leave fewer rows than the budget."""
    from shedkit.models.encode import has_empty_response

    usable = np.array([0.0 if has_empty_response(r) else 1.0 for r in ctx.records])
    defined = usable > 0
    easy, hard = guard_masks(usable, ctx.option("easy_quantile", 0.0), ctx.option("hard_quantile", 0.0), defined)
    left = int((defined & ~easy & ~hard).sum())
    if left < ctx.budget:
        raise ShedkitError(
            f"only {left} of {len(ctx.records)} rows can be selected ({int((~defined).sum())} with an empty response, "
            f"{int(easy.sum())} dropped by easy_quantile, {int(hard.sum())} by hard_quantile), fewer than the budget "
            f"{ctx.budget}; lower the budget or the guard quantiles"
        )
