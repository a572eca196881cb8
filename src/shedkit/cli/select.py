"""`shedkit select POOL --method M --budget B --out DIR`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from shedkit.cli.config import merge_config

CORE = ("pool", "method", "budget", "out", "seed", "format", "field", "dedup", "skip_empty", "cache_dir", "config")


def select_command(
    ctx: typer.Context,
    pool: Path = typer.Argument(..., help="Pool file (.jsonl, .json, .parquet, .csv) or saved HF dataset dir."),
    method: str = typer.Option("random", "--method", "-m", help="random | shed-qocs | shed-qwcs | lobass | dsir | dq | full"),
    budget: str = typer.Option("0.1", "--budget", "-b", help="Fraction of the pool in (0,1) or a row count."),
    out: Path = typer.Option(Path("shedkit-out"), "--out", "-o", help="Output directory (subset, scores.csv, manifest.json, report.html)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same subset."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file whose keys are these flags (flags win)."),
    format: Optional[str] = typer.Option(None, "--format", help="alpaca | dolly | sharegpt | openai | prompt-completion (default: detect)."),
    field: Optional[List[str]] = typer.Option(None, "--field", help="Field mapping CANONICAL=COLUMN, e.g. instruction=question (repeatable)."),
    dedup: bool = typer.Option(False, "--dedup/--no-dedup", help="Drop exact duplicate rows (counted either way)."),
    skip_empty: bool = typer.Option(False, "--skip-empty/--no-skip-empty", help="Leave out rows with an empty response instead of failing."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Shared cache (embeddings, fine-tunes, losses); default $SHEDKIT_CACHE or ~/.cache/shedkit."),
    # embedding / clustering (SHED, DQ)
    embedder: Optional[str] = typer.Option(None, "--embedder", help="Sentence-transformers id/path or 'hashed-ngrams' (default all-MiniLM-L6-v2)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda | mps (default: best available)."),
    clusters: Optional[int] = typer.Option(None, "--clusters", "-k", help="Number of k-means clusters (default about sqrt(N))."),
    # SHED value function and estimator
    target: Optional[List[Path]] = typer.Option(None, "--target", help="Target dev set(s): Alpaca-style rows or {query, choices, gold} (repeatable)."),
    objective: Optional[str] = typer.Option(None, "--objective", help="loss | mc-accuracy (default: from the target's rows)."),
    model: Optional[str] = typer.Option(None, "--model", help="Proxy/base model: HF id, local path, smollm2-135m or tiny-random."),
    estimator: Optional[str] = typer.Option(None, "--estimator", help="shed (removal, SHED's) | mc (permutation) | tmc (truncated) | antithetic | msr (MSR Banzhaf) | stratified | cv (control-variate Shapley) | regression (KernelSHAP, paired)."),
    removal_k: Optional[int] = typer.Option(None, "--removal-k", help="SHED: proxies removed per step (default 1)."),
    group_credit: Optional[str] = typer.Option(None, "--group-credit", help="SHED, k>1: 'split' the step's drop among the k removed (efficiency holds; default) or give each the 'full' drop (the paper's wording)."),
    tmc_rtol: Optional[float] = typer.Option(None, "--tmc-rtol", help="Truncated MC: stop a permutation within this relative tolerance of v(full) (default 0.05)."),
    truncation: Optional[float] = typer.Option(None, "--truncation", help="Permutation estimators: stop a walk within this relative tolerance of where it ends (v(full) adding, v(∅) removing); the rest get 0."),
    antithetic: Optional[bool] = typer.Option(None, "--antithetic/--no-antithetic", help="Permutation estimators: follow each permutation by its reverse."),
    surrogate: Optional[Path] = typer.Option(None, "--surrogate", help="cv: per-proxy surrogate values, JSON {id: value} or CSV id,value (default: a linear model fitted on the fine-tunes so far)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="SHED: print the planned fine-tunes, time one real fine-tune, print the estimated wall time, and exit."),
    permutations: Optional[int] = typer.Option(None, "--permutations", help="Number of permutations T."),
    max_evals: Optional[int] = typer.Option(None, "--max-evals", help="Stop after this many fine-tunes."),
    max_time: Optional[float] = typer.Option(None, "--max-time", help="Stop valuation after this many seconds."),
    stderr_threshold: Optional[float] = typer.Option(None, "--stderr-threshold", help="Stop when every value's standard error is below this."),
    rank_stability: Optional[float] = typer.Option(None, "--rank-stability", help="Stop when the halves' Spearman reaches this."),
    backend: Optional[str] = typer.Option(None, "--backend", help="sequential | process | ray."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Worker processes for --backend process."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Existing Ray cluster address (default: a local one)."),
    values: Optional[Path] = typer.Option(None, "--values", help="CSV of cluster,value: skip valuation and only sample."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="QWCS softmax temperature (default from the values' spread)."),
    epochs: Optional[float] = typer.Option(None, "--epochs", help="Fine-tune epochs (proxy fine-tunes, LoBaSS reference)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Fine-tune learning rate."),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Max tokens per example."),
    precision: Optional[str] = typer.Option(None, "--precision", help="auto | bf16 | fp32."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Fine-tune rows per optimiser step (default 8)."),
    lora_r: Optional[int] = typer.Option(None, "--lora-r", help="LoRA rank (default 16)."),
    ifd: Optional[bool] = typer.Option(None, "--ifd/--no-ifd", help="LoBaSS: also compute IFD (loss with / without the instruction) into scores.csv."),
    # LoBaSS
    reference: Optional[str] = typer.Option(None, "--reference", help="LoBaSS reference model/adapter path (default: fine-tune on the pool)."),
    easy_quantile: Optional[float] = typer.Option(None, "--easy-quantile", help="LoBaSS: drop rows whose base loss is in this lowest quantile."),
    hard_quantile: Optional[float] = typer.Option(None, "--hard-quantile", help="LoBaSS: drop rows whose base loss is in this highest quantile."),
    quota_by: Optional[str] = typer.Option(None, "--quota-by", help="LoBaSS: column of the original rows to apply quotas by."),
    quota: Optional[List[str]] = typer.Option(None, "--quota", help="LoBaSS: GROUP=SHARE (repeatable), e.g. alpaca=0.7."),
    # DSIR / DQ
    top_k: Optional[bool] = typer.Option(None, "--top-k/--gumbel", help="DSIR: deterministic top-k instead of Gumbel-top-k sampling."),
    dsir_buckets: Optional[int] = typer.Option(None, "--dsir-buckets", help="DSIR: hashed n-gram buckets (default 10000)."),
    dsir_normalize: Optional[bool] = typer.Option(None, "--dsir-normalize/--dsir-raw", help="DSIR: per-token normalised log-weights (best with --top-k; Gumbel noise blurs them)."),
    dsir_smoothing: Optional[str] = typer.Option(None, "--dsir-smoothing", help="DSIR: Laplace pseudo-count (default 1.0) or 'reference' (data-selection's +1e-8)."),
    dsir_hashing: Optional[str] = typer.Option(None, "--dsir-hashing", help="DSIR: sha256 (data-selection's buckets; default) or murmur3 (faster)."),
    dsir_min_tokens: Optional[int] = typer.Option(None, "--dsir-min-tokens", help="DSIR: drop rows shorter than this (default 0; the paper used 100 for pre-training text)."),
    bins: Optional[int] = typer.Option(None, "--bins", help="DQ: number of GraphCut bins (default 10)."),
    dq_mode: Optional[str] = typer.Option(None, "--dq-mode", help="DQ: auto | exact | blocked | partitioned (auto partitions above 20k rows)."),
    train_method: Optional[str] = typer.Option(None, "--train-method", help="Fine-tunes: lora (default) or full."),
) -> None:
    """Select a subset of POOL and write it, in POOL's own format, with scores and a report."""
    import sys

    from rich.console import Console

    from shedkit.pipeline.select import select

    from shedkit.value.planning import DryRunFinished

    params = merge_config(ctx, dict(ctx.params), config)
    options = {k: v for k, v in params.items() if k not in CORE and v is not None and v != []}
    if not options.get("dry_run"):
        options.pop("dry_run", None)
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


def register(app: typer.Typer) -> None:
    app.command("select", help="Select a subset of a pool.")(select_command)
