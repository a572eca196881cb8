"""`shedkit finetune SUBSET --model M --out DIR`: fine-tune a model on a subset and save it.

One fixed, documented recipe: the model layer's ``TrainConfig`` (LoRA by default, ``--method
full`` for full fine-tuning; loss on response tokens only; seeded). Defaults are TrainConfig's;
the benchmark's recipe is ``shedkit.evaluate.recipe.BENCH_RECIPE`` (2 epochs, max 512 tokens,
otherwise these defaults). DIR gets the model as safetensors (LoRA adapter, or whole weights
with ``--merged`` / ``--method full``), the tokenizer, ``shedkit_train.json`` and
``train_stats.json`` (loss per optimiser step, steps, rows, tokens, wall time).
"""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import typer

from shedkit.cli.config import merge_config
from shedkit.cli.flags import ConfigFlag, InputFlags, RunFlags, with_flags
from shedkit.models.config import TrainConfig
from shedkit.pipeline.options import options_from_config
from shedkit.util.defaults import DEFAULT_MODEL

#: every TrainConfig field as a flag, under its own name (``--method`` is lora | full here)
TrainFlags = options_from_config(TrainConfig, "TrainFlags")
TrainFlags.panel = "Fine-tuning options"


def finetune_command(
    ctx: typer.Context,
    subset: Path = typer.Argument(..., help="Training rows: any pool file shedkit reads (.jsonl, .json, .parquet, .csv, HF dataset dir)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="Base model: HF id, local path, smollm2-135m or tiny-random."),
    out: Path = typer.Option(..., "--out", "-o", help="New directory for the fine-tuned model (must not exist)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the row order, LoRA initialisation and dropout."),
    merged: bool = typer.Option(False, "--merged/--adapter", help="LoRA: save merged whole weights instead of the adapter."),
    **flags: Any,
) -> None:
    """Fine-tune MODEL on SUBSET (response-only loss) and save it to DIR as safetensors."""
    from rich.console import Console

    from shedkit.evaluate.recipe import finetune_subset

    params = merge_config(ctx, dict(ctx.params), ctx.params["config"])
    from shedkit.cli.bench import set_threads

    set_threads(params["threads"])
    from shedkit.models.encode import read_chat_template

    params["chat_template"] = read_chat_template(params.get("chat_template")) or None
    train = TrainConfig(**{f.name: params[f.name] for f in fields(TrainConfig) if params.get(f.name) is not None})
    console = Console(highlight=False, stderr=True)
    console.print(f"fine-tuning {params['model']} on {params['subset']}: {train.method}, {train.epochs:g} epoch(s), "
                  f"lr {train.lr:g}, batch {train.batch_size}, max_length {train.max_length}, seed {params['seed']}")
    stats = finetune_subset(
        params["subset"], params["model"], params["out"], train, params["seed"], merged=params["merged"],
        format=params["format"], fields=params["field"], skip_empty=params["skip_empty"],
        progress=params["progress"], command=["shedkit", *sys.argv[1:]],
    )
    losses = stats["step_losses"]
    out = Console(highlight=False)
    out.print(f"trained {stats['steps']} steps on {stats['rows']} rows ({stats['tokens']} target tokens) in "
              f"{stats['train_seconds']:.1f} s; loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    out.print(f"  saved   {params['out']} ({stats['kind']})")


def register(app: typer.Typer) -> None:
    command = with_flags(ConfigFlag, InputFlags, RunFlags, TrainFlags, skip=("dedup",))(finetune_command)
    app.command("finetune", help="Fine-tune a model on a subset with one fixed recipe (LoRA by default).")(command)
