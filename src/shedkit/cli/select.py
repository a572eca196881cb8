"""`shedkit select POOL --method M --budget B --out DIR`.

The method flags are generated from the methods' ``Options`` dataclasses
(``shedkit.pipeline.options``): the union of every method's options, each ``None`` unless
given. A flag or a YAML key that the chosen method does not take is an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from shedkit.cli.config import given_on_command_line, load_yaml, merge_config
from shedkit.cli.flags import CacheFlag, ConfigFlag, InputFlags, ThreadsFlag, with_flags
from shedkit.pipeline.methods import METHODS

CORE = ("pool", "method", "budget", "out", "seed", "format", "field", "dedup", "skip_empty", "cache_dir", "config", "threads")


def select_command(
    ctx: typer.Context,
    pool: Path = typer.Argument(..., help="Pool file (.jsonl, .json, .parquet, .csv) or saved HF dataset dir."),
    method: str = typer.Option("random", "--method", "-m", help=" | ".join(METHODS)),
    budget: str = typer.Option("0.1", "--budget", "-b", help="Fraction of the pool in (0,1) or a row count."),
    out: Path = typer.Option(Path("shedkit-out"), "--out", "-o", help="Output directory (subset, scores.csv, manifest.json, report.html)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same subset."),
    **options: Any,
) -> None:
    """Select a subset of POOL and write it, in POOL's own format, with scores and a report."""
    import sys

    from rich.console import Console

    from shedkit.pipeline.options import check_options
    from shedkit.pipeline.select import select

    params = merge_config(ctx, dict(ctx.params), ctx.params.get("config"))
    options = {k: v for k, v in params.items() if k not in CORE and v is not None and v != [] and v != ()}
    yaml_keys = set(load_yaml(params["config"])) if params["config"] else set()
    check_options(params["method"], options, lambda k: f"{params['config']}: key '{k}'"
                  if k in yaml_keys and not given_on_command_line(ctx, k) else f"--{k.replace('_', '-')}")
    from shedkit.value.planning import DryRunFinished

    if params.get("threads") is not None:
        from shedkit.cli.bench import set_threads

        set_threads(params["threads"])
    try:
        result = select(
            params["pool"], method=params["method"], budget=params["budget"], seed=params["seed"],
            out=params["out"], format=params["format"], fields=params["field"], dedup=params["dedup"],
            skip_empty=params["skip_empty"], cache_dir=params["cache_dir"],
            command=["shedkit", *sys.argv[1:]], **options,
        )
    except DryRunFinished:
        raise typer.Exit(0)  # the plan is printed already
    console = Console(highlight=False)
    console.print(f"selected {result.budget} of {len(result.pool.records)} rows with {result.method}")
    for name, path in result.files.items():
        console.print(f"  {name:9s} {path}")


def _method_option_classes() -> list[type]:
    from shedkit.pipeline.methods import options_class

    return [cls for cls in dict.fromkeys(options_class(m) for m in METHODS) if cls is not None]


def register(app: typer.Typer) -> None:
    command = with_flags(ConfigFlag, InputFlags, CacheFlag, ThreadsFlag, *_method_option_classes())(select_command)
    app.command("select", help="Select a subset of a pool.")(command)
