"""Fine-tune a model on a subset file and save it: ``shedkit finetune``'s engine.

The training itself is the model layer's (``shedkit.models.finetune``: a plain, seeded torch
loop; LoRA by default, full fine-tuning as an option; loss on response tokens only) and so is
the saving (``save_finetuned``: safetensors adapter or merged/full weights, tokenizer and
``shedkit_train.json``). This module adds the subset reading, the base model's name in the
saved directory (so ``shedkit eval DIR`` finds the base of an adapter) and ``train_stats.json``.

The benchmark's fixed recipe is ``BENCH_RECIPE`` (with ``RECIPE_SEED``): LoRA r=16,
alpha=32, dropout 0.05 on every linear layer, 2 epochs, AdamW lr 2e-4 with linear decay and
no warm-up, batch 8, max 512 tokens (prompt cut first), gradient clipping at 1.0, bf16
autocast where the CPU/GPU runs it fast, seed 0 — the DESIGN's "one fixed LoRA recipe
(2 epochs)". ``QUICK_RECIPE`` (``shedkit bench --quick``) trains 1 epoch at max 256 tokens.
``shedkit finetune`` itself defaults to ``TrainConfig()`` (1 epoch, 512 tokens).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from shedkit.errors import ShedkitError
from shedkit.models.config import TrainConfig
from shedkit.util.defaults import DEFAULT_MODEL

# every field spelled out: the benchmark's recipe must not drift when TrainConfig's defaults change
BENCH_RECIPE = TrainConfig(
    method="lora", epochs=2.0, lr=2e-4, batch_size=8, grad_accum=1, max_length=512, lora_r=16, lora_alpha=32.0,
    lora_dropout=0.05, target_modules="all-linear", weight_decay=0.0, warmup_ratio=0.0, scheduler="linear",
    max_grad_norm=1.0, precision="auto", template="auto", train_on="all", chat_template="",
)
QUICK_RECIPE = replace(BENCH_RECIPE, epochs=1.0, max_length=256)
RECIPE_SEED = 0
TRAIN_STATS = "train_stats.json"


def finetune_records(
    records: Sequence,
    model: str,
    out: str | os.PathLike,
    config: TrainConfig | None = None,
    seed: int = RECIPE_SEED,
    *,
    merged: bool = False,
    base: tuple | None = None,
    progress: bool = True,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Fine-tune ``model`` (a spec: alias, path, hub id) on ``records`` and save it to ``out``.

    base -- an already loaded ``(model, tokenizer)`` for the spec ``model`` (left untouched:
            ``finetune`` trains a copy); loaded afresh when None.
    Writes ``out`` atomically (a temp directory renamed at the end): the model as safetensors
    (LoRA adapter, or whole weights with ``merged`` or full fine-tuning), tokenizer,
    ``shedkit_train.json`` and ``train_stats.json``. Returns the train stats document.
    """
    from shedkit.models.finetune import finetune, save_finetuned
    from shedkit.models.loading import load_model, model_identity

    config = config or TrainConfig()
    out = Path(out)
    if out.exists():
        raise ShedkitError(f"{out} already exists; choose a new --out directory")
    wall = time.perf_counter()
    if base is None:
        base = load_model(model)
    lm, tokenizer = base
    result = finetune(lm, tokenizer, list(records), config, seed, progress=progress)
    result.base_model = str(model)
    stats = result.stats
    kind = "lora-adapter" if config.method == "lora" and not merged else ("merged-lora" if merged and config.method == "lora" else "full")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.staging-{uuid.uuid4().hex}"
    try:
        with warnings.catch_warnings():  # peft looks up an alias's config.json on the hub: say nothing
            warnings.filterwarnings("ignore", message="Unable to fetch remote file.*")
            saved = save_finetuned(result, staging / "model", merged=merged)
        doc = {
            "base_model": str(model),
            "base_model_identity": model_identity(str(model)),
            "kind": kind,
            "seed": int(seed),
            "train_config": config.to_dict(),
            "step_losses": stats.step_losses,
            "steps": stats.steps,
            "rows": stats.rows,
            "rows_trained": rows_trained(stats.rows, config.epochs),
            "tokens": stats.tokens,
            "skipped": stats.skipped,
            "precision": stats.precision,
            "trainable_params": stats.trainable_params,
            "train_seconds": round(stats.seconds, 3),
            "wall_seconds": round(time.perf_counter() - wall, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **dict(extra or {}),
        }
        (saved / TRAIN_STATS).write_text(json.dumps(doc, indent=1, default=str) + "\n")
        os.rename(saved, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    del result
    return doc


def rows_trained(rows: int, epochs: float) -> int:
    """Row presentations in a fine-tune of ``epochs`` over ``rows`` rows (the model layer trains
    a fractional last epoch on ``ceil(frac * rows)`` rows)."""
    import math

    whole, frac = int(epochs), epochs - int(epochs)
    return whole * rows + (max(1, math.ceil(frac * rows)) if frac > 0 else 0)


def finetune_subset(
    subset: str | os.PathLike,
    model: str = DEFAULT_MODEL,
    out: str | os.PathLike = "shedkit-finetune",
    config: TrainConfig | None = None,
    seed: int = RECIPE_SEED,
    *,
    merged: bool = False,
    format: str | None = None,
    fields: Mapping[str, str] | list[str] | None = None,
    skip_empty: bool = False,
    progress: bool = True,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """Read ``subset`` (any pool file shedkit reads) and fine-tune ``model`` on it (see
    ``finetune_records``). Returns the train stats document."""
    from shedkit.data.pool import load_pool
    from shedkit.report.manifest import environment

    out = Path(out)
    if out.exists():  # fail before any model work
        raise ShedkitError(f"{out} already exists; choose a new --out directory")
    pool = load_pool(subset, format=format, fields=fields, skip_empty=skip_empty)
    extra = {
        "subset": {"path": str(pool.path), "format": pool.format, "rows": pool.num_rows,
                   "records": len(pool.records), "skipped_empty": pool.skipped_empty},
        "shedkit_command": command,
        "environment": environment(),
    }
    return finetune_records(pool.records, model, out, config, seed, merged=merged, progress=progress, extra=extra)


def read_train_stats(model_dir: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(model_dir) / TRAIN_STATS
    return json.loads(path.read_text()) if path.exists() else None
