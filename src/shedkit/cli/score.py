"""`shedkit score POOL --model M --out DIR [--ifd]`: per-row response losses of a pool.

Writes ``DIR/scores.csv`` (``row,id,loss,n_tokens`` and ``ifd`` with ``--ifd``; rows with no
loss have empty cells) and ``DIR/manifest.json``. ``loss`` is the model layer's
``response_losses``: the mean per-token loss (nats) over the response tokens (every assistant
turn of a multi-turn row); ``ifd`` is the instruction-following difficulty, loss of the last
response with its prompt / without it. Losses are cached per (model, scoring settings, row id)
in the shared cache, so a rerun or an interrupted run scores only the rows it lacks, and
``shedkit select --method lobass`` with the same model and settings reuses them. Rows are scored
in shards of ``--shard-size`` rows (default 256), here or, with ``--backend process|ray``, on that
backend's workers (``--workers``, ``--ray-address``, ``--gpus-per-job``): the same numbers and
cache entries either way.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, List, Mapping, Optional

import typer

from shedkit.cli.config import merge_config
from shedkit.cli.flags import CacheFlag, ConfigFlag, InputFlags, ScoreFlags, with_flags
from shedkit.pipeline.options import BackendOptions, DeviceOptions, ScoreOptions
from shedkit.util.defaults import DEFAULT_MODEL


def score_pool(
    pool: str | Path,
    model: str = DEFAULT_MODEL,
    out: str | Path = "shedkit-score",
    *,
    ifd: bool = False,
    format: str | None = None,
    fields: Mapping[str, str] | list[str] | None = None,
    dedup: bool = False,
    skip_empty: bool = False,
    cache_dir: str | Path | None = None,
    device: str | None = None,
    command: list[str] | None = None,
    progress: bool = True,
    backend: str | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
    gpus_per_job: float | None = None,
    shard_size: int | None = None,
    **score_options: Any,
) -> dict[str, Path]:
    """Score every row of ``pool`` with ``model``; write scores.csv + manifest.json to ``out``.

    ``score_options`` are ``ScoreConfig`` fields (max_length, precision, batch_size,
    max_batch_tokens, template). ``backend`` (None: in this process), ``workers``,
    ``ray_address``, ``gpus_per_job``: where the shards of ``shard_size`` rows (default 256)
    are scored, as ``BackendOptions`` say for ``shedkit select``. Returns the paths written.
    """
    from shedkit.data.containers import atomic_write_json, atomic_write_text, rows_to_csv_text
    from shedkit.data.pool import load_pool
    from shedkit.errors import ShedkitError
    from shedkit.pipeline.paths import default_cache_dir
    from shedkit.report.manifest import Timer, environment

    timer = Timer()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ShedkitError(f"--out {out} exists and is not a directory")
    with timer("load"):
        loaded = load_pool(pool, format=format, fields=fields, dedup=dedup, skip_empty=skip_empty)
    from shedkit.models.config import ScoreConfig
    from shedkit.models.device import model_device
    from shedkit.models.loading import model_identity, shared_model
    from shedkit.models.losses import response_losses
    from shedkit.pipeline.backends import chosen_backend

    config = ScoreConfig(**{k: v for k, v in score_options.items() if v is not None})
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    with timer("model"):
        lm, tokenizer = shared_model(model, device=device)
        model_id = model_identity(model)
    execution = {"backend": backend, "workers": workers, "ray_address": ray_address, "gpus_per_job": gpus_per_job}
    with timer("score"), chosen_backend(execution, {"device": str(model_device(lm))}) as be:
        res = response_losses(lm, tokenizer, loaded.records, config, ifd=ifd, on_empty="skip",
                              cache_dir=cache, model_id=model_id, progress=progress,
                              backend=be, shard_size=shard_size, model_spec=model)
    n = len(loaded.records)
    columns = {"loss": res.column("loss", n), "n_tokens": res.column("n_tokens", n)}
    if ifd:
        columns["ifd"] = res.column("ifd", n)
    header = ["row", "id", *columns]
    body = [[r.index, r.id, *(_cell(columns[c][i], c == "n_tokens") for c in columns)]
            for i, r in enumerate(loaded.records)]
    manifest = {
        "shedkit_command": command if command is not None else list(sys.argv),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "pool": {"path": str(loaded.path), "format": loaded.format, "field_map": loaded.field_map,
                 "rows": loaded.num_rows, "records": n, "duplicates": len(loaded.duplicates),
                 "duplicates_dropped": loaded.dedup, "skipped_empty": loaded.skipped_empty},
        "model": model, "model_id": model_id, "device": device,
        "score_config": config.to_dict(), "ifd": ifd,
        "counts": {"records": n, "scored": len(res.ids), "skipped_rows": len(res.skipped),
                   "computed": len(res.ids) - res.cached, "cached": res.cached},
        "skipped_ids": [rid for _, rid in res.skipped[:20]],
        "cache_dir": str(cache),
        "environment": environment(),
    }
    given = {k: v for k, v in {**execution, "shard_size": shard_size}.items() if v is not None}
    if given:  # only when asked: a default run's manifest is as before
        manifest["execution"] = given
    out.mkdir(parents=True, exist_ok=True)
    with timer("write"):
        scores = atomic_write_text(out / "scores.csv", rows_to_csv_text(header, body))
    manifest["timings"] = {k: round(v, 4) for k, v in timer.seconds.items()}
    return {"scores": scores, "manifest": atomic_write_json(out / "manifest.json", manifest)}


def _cell(value: float, integer: bool = False):
    if value != value:  # NaN: a row with no loss
        return ""
    return int(value) if integer else repr(float(value))


def score_command(
    ctx: typer.Context,
    pool: Path = typer.Argument(..., help="Pool file (.jsonl, .json, .parquet, .csv) or saved HF dataset dir."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="HF id, local path, smollm2-135m or tiny-random."),
    out: Path = typer.Option(Path("shedkit-score"), "--out", "-o", help="Output directory (scores.csv, manifest.json)."),
    ifd: bool = typer.Option(False, "--ifd/--no-ifd", help="Also compute IFD (loss with the instruction / without it): one extra pass over the responses."),
    **flags: Any,
) -> None:
    """Write each row's mean response-token loss (and IFD) under MODEL to DIR/scores.csv."""
    from rich.console import Console

    from shedkit.models.encode import read_chat_template

    params = merge_config(ctx, dict(ctx.params), ctx.params["config"])
    files = score_pool(
        params["pool"], params["model"], params["out"], ifd=params["ifd"], format=params["format"],
        fields=params["field"], dedup=params["dedup"], skip_empty=params["skip_empty"],
        cache_dir=params["cache_dir"], device=params["device"], command=["shedkit", *sys.argv[1:]],
        max_length=params["max_length"], precision=params["precision"], batch_size=params["batch_size"],
        max_batch_tokens=params["max_batch_tokens"], template=params["template"], train_on=params["train_on"],
        chat_template=read_chat_template(params["chat_template"]) or None,
        backend=params["backend"], workers=params["workers"], ray_address=params["ray_address"],
        gpus_per_job=params["gpus_per_job"], shard_size=params["shard_size"],
    )
    console = Console(highlight=False)
    console.print(f"scored {params['pool']} with {params['model']}")
    for name, path in files.items():
        console.print(f"  {name:9s} {path}")


def register(app: typer.Typer) -> None:
    # ScoreOptions adds --shard-size (its other fields are ScoreFlags' batch_size / max_batch_tokens)
    command = with_flags(ConfigFlag, InputFlags, CacheFlag, DeviceOptions, ScoreFlags, ScoreOptions, BackendOptions,
                         skip=("score_batch_size",))(score_command)
    app.command("score", help="Per-row response losses (and IFD) of a pool under a model.")(command)
