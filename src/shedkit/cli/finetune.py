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
from pathlib import Path
from typing import List, Optional

import typer

from shedkit.cli.config import merge_config
from shedkit.models.config import TrainConfig, field_help

_HELP = {name: (default, text) for name, default, text in field_help(TrainConfig)}


def _h(name: str) -> str:
    default, text = _HELP[name]
    return f"{text} [default: {default}]"


TRAIN_FLAGS = ("method", "epochs", "lr", "batch_size", "grad_accum", "max_length", "lora_r", "lora_alpha",
               "lora_dropout", "target_modules", "weight_decay", "warmup_ratio", "scheduler", "max_grad_norm",
               "precision", "template", "train_on", "chat_template")


def finetune_command(
    ctx: typer.Context,
    subset: Path = typer.Argument(..., help="Training rows: any pool file shedkit reads (.jsonl, .json, .parquet, .csv, HF dataset dir)."),
    model: str = typer.Option("smollm2-135m", "--model", help="Base model: HF id, local path, smollm2-135m or tiny-random."),
    out: Path = typer.Option(..., "--out", "-o", help="New directory for the fine-tuned model (must not exist)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the row order, LoRA initialisation and dropout."),
    merged: bool = typer.Option(False, "--merged/--adapter", help="LoRA: save merged whole weights instead of the adapter."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file whose keys are these flags (flags win)."),
    format: Optional[str] = typer.Option(None, "--format", help="alpaca | dolly | sharegpt | openai | prompt-completion (default: detect)."),
    field: Optional[List[str]] = typer.Option(None, "--field", help="Field mapping CANONICAL=COLUMN (repeatable)."),
    skip_empty: bool = typer.Option(False, "--skip-empty/--no-skip-empty", help="Leave out rows with an empty response instead of failing."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (default torch's; 1 is fastest on a shared, busy CPU)."),
    method: Optional[str] = typer.Option(None, "--method", help=_h("method")),
    epochs: Optional[float] = typer.Option(None, "--epochs", help=_h("epochs")),
    lr: Optional[float] = typer.Option(None, "--lr", help=_h("lr")),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help=_h("batch_size")),
    grad_accum: Optional[int] = typer.Option(None, "--grad-accum", help=_h("grad_accum")),
    max_length: Optional[int] = typer.Option(None, "--max-length", help=_h("max_length")),
    lora_r: Optional[int] = typer.Option(None, "--lora-r", help=_h("lora_r")),
    lora_alpha: Optional[float] = typer.Option(None, "--lora-alpha", help=_h("lora_alpha")),
    lora_dropout: Optional[float] = typer.Option(None, "--lora-dropout", help=_h("lora_dropout")),
    target_modules: Optional[str] = typer.Option(None, "--target-modules", help=_h("target_modules")),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help=_h("weight_decay")),
    warmup_ratio: Optional[float] = typer.Option(None, "--warmup-ratio", help=_h("warmup_ratio")),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help=_h("scheduler")),
    max_grad_norm: Optional[float] = typer.Option(None, "--max-grad-norm", help=_h("max_grad_norm")),
    precision: Optional[str] = typer.Option(None, "--precision", help=_h("precision")),
    template: Optional[str] = typer.Option(None, "--template", help=_h("template")),
    train_on: Optional[str] = typer.Option(None, "--train-on", help="all | last: assistant turns trained on (default all)."),
    chat_template: Optional[Path] = typer.Option(None, "--chat-template", help="Jinja chat template FILE used instead of the tokenizer's."),
) -> None:
    """Fine-tune MODEL on SUBSET (response-only loss) and save it to DIR as safetensors."""
    from rich.console import Console

    from shedkit.evaluate.recipe import finetune_subset

    params = merge_config(ctx, dict(ctx.params), config)
    from shedkit.cli.bench import set_threads

    set_threads(params["threads"])
    from shedkit.models.encode import read_chat_template

    params["chat_template"] = read_chat_template(params.get("chat_template")) or None
    train = TrainConfig(**{k: params[k] for k in TRAIN_FLAGS if params.get(k) is not None})
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
    app.command("finetune", help="Fine-tune a model on a subset with one fixed recipe (LoRA by default).")(finetune_command)
