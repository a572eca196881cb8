"""`shedkit eval --model DIR_OR_ID --task FILE [--task FILE ...] [--out DIR]`.

Tasks: instruction rows -> mean response-token loss; ``{query, choices, gold}`` rows ->
acc/acc_norm by log-likelihood (lm-evaluation-harness's definitions); an MMLU CSV
(question, choice0..choice3, answer) or a directory of them -> acc/acc_norm with lm-eval's
zero-shot MMLU prompt (see ``shedkit.evaluate.tasks``). The model is an alias
(smollm2-135m, tiny-random), a Hugging Face directory or hub id, or a directory written by
``shedkit finetune`` (adapter or merged). ``--harness lm-eval`` runs the same loaded model
through lm-evaluation-harness instead (multiple-choice tasks; needs ``shedkit[eval]``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, List, Optional

import typer

from shedkit.cli.config import merge_config
from shedkit.cli.flags import ConfigFlag, RunFlags, ScoreFlags, with_flags
from shedkit.pipeline.options import DeviceOptions


def eval_command(
    ctx: typer.Context,
    model: str = typer.Option(..., "--model", help="A `shedkit finetune` directory, an HF directory or hub id, smollm2-135m or tiny-random."),
    task: List[Path] = typer.Option(..., "--task", "-t", help="Task file (instruction rows, {query, choices, gold} rows, an MMLU CSV) or a directory of MMLU CSVs (repeatable)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Directory for metrics.json (default: print only)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Score only the first N rows of each task."),
    harness: str = typer.Option("shedkit", "--harness", help="shedkit (the model layer) | lm-eval (lm-evaluation-harness; needs shedkit[eval])."),
    format: Optional[str] = typer.Option(None, "--format", help="Format of instruction-row task files (default: detect)."),
    mmlu_description: bool = typer.Option(True, "--mmlu-description/--no-mmlu-description", help="Prefix MMLU prompts with lm-eval's 'The following are multiple choice questions (with answers) about SUBJECT.' line."),
    **flags: Any,
) -> None:
    """Score MODEL on each task and print a table (and write DIR/metrics.json with --out)."""
    from rich.console import Console
    from rich.table import Table

    from shedkit.evaluate.harness import evaluate_model
    from shedkit.evaluate.tasks import load_tasks
    from shedkit.models.config import ScoreConfig

    params = merge_config(ctx, dict(ctx.params), ctx.params["config"])
    from shedkit.cli.bench import set_threads

    set_threads(params["threads"])
    from shedkit.models.encode import read_chat_template

    params["chat_template"] = read_chat_template(params.get("chat_template")) or None
    score = ScoreConfig(**{k: params[k] for k in ("batch_size", "max_batch_tokens", "max_length", "precision", "template",
                                                  "train_on", "chat_template") if params.get(k) is not None})
    tasks = load_tasks(params["task"], format=params["format"], mmlu_description=params["mmlu_description"])
    doc = evaluate_model(params["model"], tasks, params["out"], score_config=score, limit=params["limit"],
                         harness=params["harness"], device=params["device"], progress=params["progress"],
                         command=["shedkit", *sys.argv[1:]])
    table = Table(title=f"{params['model']} ({params['harness']})")
    for col in ("task", "rows", "loss", "acc", "acc_norm", "seconds"):
        table.add_column(col, justify="left" if col == "task" else "right")
    for name, m in doc["tasks"].items():
        if m.get("kind") == "skipped":
            table.add_row(name, "", "", "", "", m.get("reason", "skipped"))
            continue
        rows = m.get("n_rows", m.get("n", ""))
        table.add_row(name, str(rows), *(f"{m[k]:.4f}" if k in m else "" for k in ("loss", "acc", "acc_norm")),
                      f"{m.get('seconds', 0):.1f}")
    console = Console(highlight=False)
    console.print(table)
    if params["out"] is not None:
        console.print(f"  metrics  {Path(params['out']) / 'metrics.json'}")


def register(app: typer.Typer) -> None:
    command = with_flags(ConfigFlag, DeviceOptions, ScoreFlags, RunFlags)(eval_command)
    app.command("eval", help="Evaluate a model: response loss on instruction rows, acc/acc_norm on multiple choice and MMLU.")(command)
