"""LoBaSS's reference model (lobass, and shed-hybrid's ``learnability`` row score): the base
model fine-tuned on the whole pool, or the user's ``reference``.

A trained reference is saved as safetensors under ``<cache_dir>/references/<key>`` (atomically,
by the model layer's ``save_finetuned``), ``key`` = hash of the base model's identity, the
training config, the pool's record ids in order, the seed and the model-layer version; a rerun
with the same key loads it instead of training. Adapters are applied to the ``model`` given for
the run (not to the base an adapter file names), so L_base and L_ref always compare the same
base with and without the fine-tune.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Sequence

from shedkit.data.records import Record
from shedkit.errors import ShedkitError
from shedkit.pipeline.methods.base import MethodContext

DEFAULT_CHECKPOINT_EVERY = 50  # optimiser steps between reference checkpoints (~4 min of SmolLM2 on 2 CPU cores)


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
