"""--method lobass: learnability-based selection (Zhou et al., arXiv 2310.13008).

1. **reference model** -- the base model fine-tuned on the whole pool (LoRA, one epoch by
   default), or the user's ``reference`` (a directory written by ``save_finetuned``, any PEFT
   adapter directory, a full Hugging Face model directory, or a hub id). A trained reference
   is saved as safetensors under ``<cache_dir>/references/<key>`` (atomically, by the model
   layer's ``save_finetuned``), ``key`` = hash of the base model's identity, the training
   config, the pool's record ids in order, the seed and the model-layer version; a rerun with
   the same key loads it instead of training. Adapters are applied to the ``model`` given for
   this run (not to the base an adapter file names), so L_base and L_ref always compare the
   same base with and without the fine-tune; both are scored with the base's tokenizer.
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

import copy
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence

import numpy as np

from shedkit.data.records import Record
from shedkit.errors import ShedkitError
from shedkit.pipeline.methods.base import MethodContext, MethodResult
from shedkit.pipeline.options import (CommonOptions, DeviceOptions, ModelOptions, RowGuardOptions, ScoreOptions,
                                      TrainOptions, opt)
from shedkit.pipeline.options import train_config_from as _train_config
from shedkit.selectors.learnability import guard_masks, parse_quota, select_learnable
from shedkit.util.defaults import DEFAULT_MODEL

DEFAULT_CHECKPOINT_EVERY = 50  # optimiser steps between reference checkpoints (~4 min of SmolLM2 on 2 CPU cores)
SCORE_OPTIONS = {"max_length": "max_length", "precision": "precision", "template": "template",
                 "train_on": "train_on", "chat_template": "chat_template",
                 "score_batch_size": "batch_size", "max_batch_tokens": "max_batch_tokens"}



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
    base = _losses(base_model, tokenizer, ctx, score_config, base_id, ifd=ifd)
    timings["base_losses"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ref_model, ref_id, ref_info = reference_model(ctx, model_spec, base_model, tokenizer, train_config)
    timings["reference"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ref = _losses(ref_model, tokenizer, ctx, score_config, ref_id, ifd=False)
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


def lobass_truncation(tokenizer, records, train_config, score_config, ref_info) -> dict:
    """Rows cut to ``max_length`` and tokens dropped, per stage (scoring and the reference fine-tune)."""
    from shedkit.models.truncation import record_truncation

    scored = record_truncation(tokenizer, records, score_config.max_length, score_config.template)
    out = {"base_losses": scored, "ref_losses": dict(scored)}
    if ref_info.get("source") != "user":
        out["reference_fine_tune"] = record_truncation(tokenizer, records, train_config.max_length, train_config.template)
    return out


# -- settings ---------------------------------------------------------------------------

def train_config_from(ctx: MethodContext):
    """The reference fine-tune's TrainConfig from the options named like its fields."""
    return _train_config(ctx)


def score_config_from(ctx: MethodContext):
    from shedkit.models.config import ScoreConfig

    values = {field_: ctx.option(opt) for opt, field_ in SCORE_OPTIONS.items() if ctx.option(opt) is not None}
    return ScoreConfig(**values)


def group_labels(records: Sequence[Record], quota_by: str | None, quota) -> list[str] | None:
    """Each record's value of the pool column ``quota_by`` as a string (None without it)."""
    if quota_by is None:
        if quota:
            raise ShedkitError("--quota needs --quota-by COLUMN (the column of the pool rows the groups are read from)")
        return None
    parse_quota(quota)  # fail on a bad quota before any model work
    labels = []
    for r in records:
        value = r.row.get(quota_by) if hasattr(r.row, "get") else None
        if value is None:
            columns = sorted(r.row)[:20] if hasattr(r.row, "keys") else []
            raise ShedkitError(f"--quota-by {quota_by!r}: row {r.index} has no value in that column (columns: {columns})")
        labels.append(value if isinstance(value, str) else json.dumps(value, sort_keys=True))
    return labels


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


def _losses(model, tokenizer, ctx: MethodContext, config, model_id: str, ifd: bool):
    from shedkit.models.losses import response_losses

    return response_losses(model, tokenizer, ctx.records, config, ifd=ifd, on_empty="skip",
                           cache_dir=ctx.cache_dir, model_id=model_id, progress=bool(ctx.option("progress", True)))


# -- the reference model ----------------------------------------------------------------

def reference_key(model_spec: str, train_config, records: Sequence[Record], seed: int) -> str:
    from shedkit.models.config import MODEL_LAYER_VERSION, records_fingerprint, stable_hash

    return stable_hash({
        "kind": "lobass-reference", "model": _identity(model_spec), "train": train_config.to_dict(),
        "pool": records_fingerprint(records), "seed": int(seed), "version": MODEL_LAYER_VERSION,
    })


def reference_model(ctx: MethodContext, model_spec: str, base_model, tokenizer, train_config):
    """``(model, identity, info)``: the reference, ready to score (adapters merged)."""
    from shedkit.models.loading import model_identity

    user = ctx.option("reference")
    if user is not None:
        path = Path(str(user)).expanduser()
        if path.exists():
            if not path.is_dir() or not ((path / "adapter_config.json").exists() or (path / "config.json").exists()):
                raise ShedkitError(f"--reference {user}: not a model or adapter directory "
                                   "(no adapter_config.json or config.json in it)")
        elif os.sep in str(user) or str(user).startswith((".", "~")):
            raise ShedkitError(f"--reference {user}: no such directory")
        model, kind = load_reference(str(user), base_model, ctx.option("device"))
        ident = model_identity(str(user)) + (f"+base:{model_identity(model_spec)}" if kind == "adapter" else "")
        return model, ident, {"source": "user", "path": str(user), "kind": kind, **_recorded(path)}

    key = reference_key(model_spec, train_config, ctx.records, ctx.seed)
    out = Path(ctx.cache_dir) / "references" / key
    source = "cached"
    stats = None
    if not _is_saved(out):
        every = ctx.option("checkpoint_every")
        stats = train_reference(out, model_spec, base_model, tokenizer, ctx.records, train_config, ctx.seed,
                                progress=bool(ctx.option("progress", True)),
                                checkpoint_every=DEFAULT_CHECKPOINT_EVERY if every is None else int(every))
        source = "trained" if stats is not None else "cached"
    model, kind = load_reference(str(out), base_model, ctx.option("device"))
    info = {"source": source, "path": str(out), "key": key, "kind": kind, "train_config": train_config.to_dict(),
            **_recorded(out)}
    if stats is not None:
        info["resumed_from_step"] = stats.resumed_from_step
    return model, f"lobass-reference:{key}", info


def _identity(spec: str) -> str:
    from shedkit.models.loading import model_identity

    return model_identity(spec)


def _is_saved(path: Path) -> bool:
    return (path / "shedkit_train.json").exists()


def checkpoint_dir(out: Path) -> Path:
    """Where the reference fine-tune keyed ``out`` keeps its checkpoints while it trains."""
    return out.parent / f"{out.name}.checkpoints"


def train_reference(out: Path, model_spec: str, base_model, tokenizer, records, train_config, seed: int,
                    progress: bool = True, checkpoint_every: int = 0):
    """Fine-tune the base on ``records`` and save it at ``out``; the training stats, or None
    when another process saved the same reference first.

    With ``checkpoint_every`` > 0 the fine-tune checkpoints every that many optimiser steps
    next to ``out`` (``<key>.checkpoints``); a killed run resumes from the last checkpoint
    (``stats.resumed_from_step``) and the checkpoints are removed once the reference is saved."""
    import shutil

    # from the submodule: once it is imported, ``shedkit.models.finetune`` names the module
    from shedkit.models import finetune as ft

    ckpt = checkpoint_dir(out) if checkpoint_every > 0 else None
    result = ft.finetune(base_model, tokenizer, records, train_config, seed, progress=progress,
                         checkpoint_dir=ckpt, checkpoint_every=checkpoint_every)
    result.base_model = model_spec  # so the saved directory names its base
    try:
        ft.save_finetuned(result, out)
    except ShedkitError:
        if _is_saved(out):  # a concurrent run saved the same key first: same weights, keep it
            return None
        raise
    if ckpt is not None:
        shutil.rmtree(ckpt, ignore_errors=True)
    return result.stats


def load_reference(spec: str, base_model, device=None):
    """The reference as one merged model: an adapter directory is applied to a copy of
    ``base_model`` and merged; anything else is loaded by the model layer."""
    path = Path(spec).expanduser()
    if (path / "adapter_config.json").exists():
        from peft import PeftModel

        from shedkit.models.finetune import quiet_peft

        try:
            with quiet_peft():
                model = PeftModel.from_pretrained(copy.deepcopy(base_model), str(path)).merge_and_unload()
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise ShedkitError(f"--reference {spec}: cannot apply this adapter to the base model: {exc}") from exc
        model.eval()
        return model, "adapter"
    from shedkit.models.loading import load_model

    model, _ = load_model(spec, device=device)
    return model, "model"


def _recorded(path: Path) -> dict[str, Any]:
    """What a save_finetuned directory says about itself (base, seed, training stats)."""
    meta = path / "shedkit_train.json"
    if not meta.exists():
        return {}
    try:
        data = json.loads(meta.read_text())
    except ValueError:
        return {}
    stats = dict(data.get("stats") or {})
    losses = stats.pop("step_losses", None) or []
    if losses:
        stats["first_step_loss"], stats["last_step_loss"] = losses[0], losses[-1]
    return {"base_model": data.get("base_model"), "seed": data.get("seed"), "train_stats": stats}
