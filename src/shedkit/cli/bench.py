"""`shedkit bench --suite DIR --methods M1,M2 --budget 0.1 --seeds 3 --out DIR [--quick]`.

For each method and seed: select with only the pool and the dev targets, fine-tune the base
model with one fixed recipe, evaluate on the test targets; write results.json, results.md and
results.png. Every stage is cached in DIR, so adding a method or a seed runs only what is
new. See ``shedkit.evaluate.bench``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional

import typer

from shedkit.cli.config import merge_config
from shedkit.cli.flags import ConfigFlag, RunFlags, flag, with_flags
from shedkit.util.defaults import DEFAULT_MODEL


def _parse_options(items: list[str] | None) -> dict[str, dict]:
    """``METHOD.KEY=VALUE`` (VALUE read as YAML: numbers, booleans, lists) -> {method: {key: value}}."""
    import yaml

    from shedkit.errors import ShedkitError

    out: dict[str, dict] = {}
    for item in items or []:
        head, sep, value = item.partition("=")
        method, dot, key = head.partition(".")
        if not sep or not dot or not method or not key:
            raise ShedkitError(f"--option {item!r}: expected METHOD.KEY=VALUE, e.g. dsir.top_k=true")
        out.setdefault(method, {})[key.replace("-", "_")] = yaml.safe_load(value)
    from shedkit.evaluate.bench_rows import REFERENCE_OPTIONS
    from shedkit.pipeline.options import check_options

    for method, options in out.items():  # fail now, not after the methods before it have run
        if method in REFERENCE_OPTIONS:
            unknown = sorted(set(options) - set(REFERENCE_OPTIONS[method]))
            if unknown:
                raise ShedkitError(f"--option {method}.{unknown[0]}: the reference row {method} takes "
                                   f"{', '.join(REFERENCE_OPTIONS[method]) or 'no options'}")
            continue
        check_options(method, options, lambda k, m=method: f"--option {m}.{k}")
    return out


def _parse_seeds(items: list[str] | None) -> dict[str, int]:
    from shedkit.errors import ShedkitError

    out = {}
    for item in items or []:
        method, sep, n = item.partition("=")
        if not sep or not n.strip().isdigit() or int(n) < 1:
            raise ShedkitError(f"--method-seeds {item!r}: expected METHOD=N with N >= 1, e.g. random=5")
        out[method.strip()] = int(n)
    return out


def set_threads(n: int | None) -> None:
    """``torch.set_num_threads(n)`` when given (the model layer's loops and the embedder follow it)."""
    if n is not None:
        import torch

        from shedkit.errors import ShedkitError

        if n < 1:
            raise ShedkitError("--threads must be >= 1")
        torch.set_num_threads(int(n))


@dataclass
class MethodSettingFlags:
    """The bench's settings for SHED's rows (shed-qocs, shed-qwcs, shed-hybrid) and LoBaSS."""

    shed_clusters: Optional[int] = flag(None, "SHED clusters (default about sqrt(N); 8 with --quick).")
    shed_permutations: Optional[int] = flag(None, "SHED permutations (default 10; 2 with --quick).")
    shed_removal_k: Optional[int] = flag(None, "SHED proxies removed per step (default 1; 2 with --quick).")
    shed_dev_limit: Optional[int] = flag(None, "SHED value function on the first N dev rows (default all; 50 with --quick).")
    shed_target: str = flag("alpaca", "The loss dev target SHED values proxies on (target_<name>_dev); first-order uses it too. "
                                       "Several, comma-separated (alpaca,lima,gsm8k): one target per task (first-order less: max over tasks).")
    shed_epochs: Optional[float] = flag(None, "Epochs of SHED's proxy fine-tunes (default: the recipe's, at least 1).")
    lobass_ref_epochs: Optional[float] = flag(None, "Epochs of LoBaSS's reference fine-tune on the pool (default 1; 0.25 with --quick).")


def bench_command(
    ctx: typer.Context,
    suite: Path = typer.Option(..., "--suite", help="Suite directory: pool.jsonl, pool_labels.jsonl, target_<name>_dev/test.jsonl."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory; holds every stage's cache, results.json/.md/.png."),
    methods: Optional[str] = typer.Option(None, "--methods", help="Comma-separated rows: any registered method, METHOD@BUDGET (lobass@0.06), dsir-per-token, or the reference row clean-random. Default: the whole table (random, clean-random, dsir, dsir-per-token, dq, lobass, lobass@0.06, shed-qocs, shed-qwcs, full and any of lowest-loss, ifd, filtered-random, first-order, shed-hybrid, shed-hybrid-filter that this shedkit has)."),
    budget: str = typer.Option("0.1", "--budget", "-b", help="Fraction of the pool in (0,1) or a row count."),
    seeds: int = typer.Option(3, "--seeds", help="Seeds 0..N-1 per method (deterministic methods run once)."),
    method_seeds: Optional[List[str]] = typer.Option(None, "--method-seeds", help="Seed count for one method, METHOD=N (repeatable), e.g. random=5."),
    first_seed: int = typer.Option(0, "--first-seed", help="Run seeds from this one on (e.g. --seeds 3 --first-seed 2: seed 2 only), so lanes or machines split the seeds; the cells join with --reuse."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="Base model fine-tuned on every subset (and SHED's/LoBaSS's model)."),
    quick: bool = typer.Option(False, "--quick", help="Cheaper settings (1 epoch, max_length 256, 100 test rows, full pool 0.25 epoch, SHED 8 clusters x 2 permutations, k=2, 50 dev rows; LoBaSS reference 0.25 epoch); listed in results.md."),
    limit_test: Optional[int] = typer.Option(None, "--limit-test", help="Evaluate on the first N rows of each test target."),
    tasks: Optional[str] = typer.Option(None, "--tasks", help="Comma-separated test targets to evaluate (e.g. alpaca,arc_easy; default all). A later run with more targets evaluates only the new ones."),
    pool_limit: Optional[int] = typer.Option(None, "--pool-limit", help="Use only the first N rows of the pool."),
    epochs: Optional[float] = typer.Option(None, "--epochs", help="Recipe epochs (default 2; 1 with --quick)."),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Recipe max tokens per row (default 512; 256 with --quick)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Recipe learning rate (default 2e-4)."),
    train_method: Optional[str] = typer.Option(None, "--train-method", help="Recipe: lora (default) or full."),
    full_epochs: Optional[float] = typer.Option(None, "--full-epochs", help="Epochs of the full-pool fine-tune (default: the recipe's; 0.25 with --quick)."),
    dsir_top_k: bool = typer.Option(False, "--dsir-top-k/--dsir-gumbel", help="DSIR deterministic top-k (then it runs once) instead of Gumbel-top-k sampling."),
    option: Optional[List[str]] = typer.Option(None, "--option", help="Extra method option METHOD.KEY=VALUE (repeatable), e.g. dq.bins=5."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="The methods' shared cache (default DIR/cache, so timings include every computation)."),
    reuse: Optional[List[Path]] = typer.Option(None, "--reuse", help="A results.json (repeatable; e.g. the committed bench/results/...): its evaluated (row, seed) cells with the same content key are reused, not recomputed. DIR/results.json is always read."),
    cached_only: bool = typer.Option(False, "--cached-only", help="Compute nothing: write the results of the cells already evaluated (DIR/results.json, --reuse files) and list the missing ones."),
    **flags: Any,
) -> None:
    """Benchmark selection methods: select, fine-tune with one recipe, evaluate on held-out targets."""
    from dataclasses import replace

    from rich.console import Console

    from shedkit.evaluate.bench import BenchConfig, run_bench
    from shedkit.evaluate.bench_rows import default_rows
    from shedkit.evaluate.recipe import BENCH_RECIPE, QUICK_RECIPE

    p = merge_config(ctx, dict(ctx.params), ctx.params["config"])
    set_threads(p["threads"])
    recipe = QUICK_RECIPE if p["quick"] else BENCH_RECIPE
    changes = {k: v for k, v in {"epochs": p["epochs"], "max_length": p["max_length"], "lr": p["lr"],
                                  "method": p["train_method"]}.items() if v is not None}
    if changes.get("epochs") is not None:
        changes["epochs"] = float(changes["epochs"])
    recipe = replace(recipe, **changes)
    budget = float(p["budget"]) if "." in str(p["budget"]) else int(p["budget"])
    settings = dict(
        methods=tuple(m.strip() for m in str(p["methods"]).split(",") if m.strip()) if p["methods"] else default_rows(),
        budget=budget, reuse=tuple(str(x) for x in p["reuse"] or ()), cached_only=p["cached_only"],
        seeds=int(p["seeds"]), first_seed=int(p["first_seed"]), model=p["model"], recipe=recipe, limit_test=p["limit_test"],
        tasks=tuple(t.strip() for t in str(p["tasks"]).split(",") if t.strip()) if p["tasks"] else None,
        pool_limit=p["pool_limit"], full_epochs=p["full_epochs"], shed_target=p["shed_target"],
        shed_clusters=p["shed_clusters"], shed_permutations=p["shed_permutations"],
        shed_removal_k=p["shed_removal_k"], shed_dev_limit=p["shed_dev_limit"],
        lobass_ref_epochs=p["lobass_ref_epochs"], dsir_top_k=p["dsir_top_k"], shed_epochs=p["shed_epochs"],
        method_options=_parse_options(p["option"]), method_seeds=_parse_seeds(p["method_seeds"]),
    )
    cfg = BenchConfig.quick_config(**settings) if p["quick"] else BenchConfig(**{k: v for k, v in settings.items() if v is not None})
    console = Console(highlight=False, stderr=True)
    det = [m for m in cfg.methods if cfg.deterministic(m)]
    if det:
        console.print(f"deterministic, run once (not per seed): {', '.join(det)}")
    doc = run_bench(p["suite"], p["out"], cfg, cache_dir=p["cache_dir"], progress=p["progress"],
                    log=lambda msg: console.print(msg, markup=False), command=["shedkit", *sys.argv[1:]])
    stdout = Console(highlight=False)
    stdout.print(f"stages computed {doc['stages']['computed']}, reused {doc['stages']['cached']}; "
                 f"wall {doc['wall_seconds'] / 60:.1f} min")
    for name in ("results.json", "results.md", "results.png", "compute_vs_quality.png"):
        stdout.print(f"  {name:12s} {Path(p['out']) / name}")


def register(app: typer.Typer) -> None:
    command = with_flags(RunFlags, ConfigFlag, MethodSettingFlags)(bench_command)
    app.command("bench", help="Benchmark selection methods on a suite: select, fine-tune, evaluate.")(command)
