"""--method dsir: importance resampling on hashed n-grams towards one or more target sets.

Options read from ``ctx.options`` (None means the default):
``target`` (required: a path or a list of paths; any pool format, or rows of any JSON fields),
``dsir_buckets`` (10000), ``dsir_top_k`` or ``top_k`` (False: Gumbel-top-k sampling),
``dsir_normalize`` (False: the faithful sum over n-grams; True: per-token mean, best with top-k),
``dsir_smoothing`` (1.0, Laplace pseudo-count; "reference" for data-selection's +1e-8),
``dsir_hashing`` ("sha256", the reference's buckets; "murmur3" is faster),
``dsir_min_tokens`` (0: keep short rows), ``dsir_system`` (False: system prompts are left out of
the pool's and the targets' n-grams, so a prompt many rows share does not decide their weights),
``progress`` (True).

scores.csv: ``dsir_logw`` (the log weight a row is ranked by; per token with normalisation);
with several targets also ``dsir_logw_t<i>`` per target and ``dsir_target`` (whose quota
picked the row, -1 if none), and ``dsir_logw`` is against all targets pooled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from shedkit.data.records import Record
from shedkit.errors import InputError, ShedkitError
from shedkit.pipeline.methods.base import MethodContext, MethodResult
from shedkit.pipeline.options import CommonOptions, TargetOptions, opt
from shedkit.selectors.dsir import dsir_select

# "2": the n-gram text leaves system prompts out unless dsir_system (version 1 read them)
VERSION = "2"


@dataclass
class Options(CommonOptions, TargetOptions):
    top_k: Optional[bool] = opt("DSIR: deterministic top-k instead of Gumbel-top-k sampling.", flags=("--top-k/--gumbel",))
    dsir_top_k: Optional[bool] = opt("DSIR: the same as top_k (Python / YAML spelling).", cli=False)
    dsir_buckets: Optional[int] = opt("DSIR: hashed n-gram buckets (default 10000).")
    dsir_normalize: Optional[bool] = opt("DSIR: per-token normalised log-weights (best with --top-k; Gumbel noise blurs them).", flags=("--dsir-normalize/--dsir-raw",))
    dsir_smoothing: Optional[str] = opt("DSIR: Laplace pseudo-count (default 1.0) or 'reference' (data-selection's +1e-8).")
    dsir_hashing: Optional[str] = opt("DSIR: sha256 (data-selection's buckets; default) or murmur3 (faster).")
    dsir_min_tokens: Optional[int] = opt("DSIR: drop rows shorter than this (default 0; the paper used 100 for pre-training text).")
    dsir_system: Optional[bool] = opt("DSIR: keep system prompts in the n-gram text (default: left out, so a prompt many "
                                      "rows share does not decide their weights).", flags=("--dsir-system/--no-dsir-system",))


class RecordTexts(Sequence):
    """The pool's texts, read from the records on demand (no second copy of the pool's text);
    system prompts left out unless ``include_system``."""

    def __init__(self, records: Sequence[Record], include_system: bool = False):
        self.records = records
        self.include_system = include_system

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [r.embedding_text(self.include_system) for r in self.records[i]]
        return self.records[i].embedding_text(self.include_system)


def _string_leaves(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, dict):
        return [s for v in value.values() for s in _string_leaves(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _string_leaves(v)]
    return []


def load_target_texts(path: str | Path, include_system: bool = False) -> list[str]:
    """The texts of a target file: each record's text for a pool format (Alpaca, ShareGPT, ...),
    system prompts left out unless ``include_system``; otherwise (e.g. multiple-choice rows
    {query, choices, gold}) every string value of the row, joined by newlines."""
    from shedkit.data import load_pool, read_table

    path = Path(path)
    if not path.exists():
        raise ShedkitError(f"DSIR target {path} does not exist")
    try:
        return [r.embedding_text(include_system) for r in load_pool(path).records]
    except InputError as exc:
        if "unknown format" not in str(exc):
            raise
    rows = read_table(path).rows
    texts = ["\n".join(_string_leaves(row)) for row in rows]
    if not any(texts):
        raise InputError(path, "no text in any row of this DSIR target")
    return texts


def _target_paths(value: Any) -> list[Path]:
    if value is None or value == [] or value == "":
        raise ShedkitError("--method dsir needs --target FILE (a target set, e.g. a dev set; repeatable)")
    values = value if isinstance(value, (list, tuple)) else [value]
    return [Path(v) for v in values]


def run(ctx: MethodContext) -> MethodResult:
    paths = _target_paths(ctx.option("target"))
    include_system = bool(ctx.option("dsir_system", False))
    clock = time.perf_counter()
    targets = [load_target_texts(p, include_system) for p in paths]
    load_seconds = time.perf_counter() - clock
    res = dsir_select(
        RecordTexts(ctx.records, include_system),
        targets,
        ctx.budget,
        num_buckets=int(ctx.option("dsir_buckets", 10_000)),
        normalize=bool(ctx.option("dsir_normalize", False)),
        top_k=bool(ctx.option("dsir_top_k", ctx.option("top_k", False))),
        smoothing=_smoothing(ctx.option("dsir_smoothing", 1.0)),
        hashing=ctx.option("dsir_hashing", "sha256"),
        min_tokens=int(ctx.option("dsir_min_tokens", 0)),
        seed=ctx.seed,
        progress=bool(ctx.option("progress", True)),
    )
    columns: dict[str, Any] = {"dsir_logw": res.log_weights.tolist()}
    if len(paths) > 1:
        for t in range(len(paths)):
            columns[f"dsir_logw_t{t}"] = res.target_log_weights[:, t].tolist()
        columns["dsir_target"] = res.chosen_for.tolist()
    info = {"targets": [str(p) for p in paths], "target_rows": [len(t) for t in targets],
            "system_prompts": include_system, **res.info}
    return MethodResult(res.selected, columns, info, {"load_targets": load_seconds, **res.timings})


def plan(p) -> list:
    """--dry-run: the targets read (timed), then DSIR timed on a sample and scaled by characters."""
    from shedkit.pipeline.plan_data import dsir_stage
    from shedkit.pipeline.planning import GB, Stage

    ctx = p.ctx
    paths = _target_paths(ctx.option("target"))
    include_system = bool(ctx.option("dsir_system", False))
    clock = time.perf_counter()
    targets = [load_target_texts(path, include_system) for path in paths]
    seconds = time.perf_counter() - clock
    chars = sum(len(t) for target in targets for t in target)
    load = Stage("load_targets", f"read {len(paths)} DSIR target file(s)", f"{sum(map(len, targets)):,} rows",
                 {"rows": sum(map(len, targets)), "characters": chars}, seconds, "measured: read here for the plan",
                 p.baseline_gb + 2 * chars / GB, "derived: the targets' text")
    settings = dict(num_buckets=int(ctx.option("dsir_buckets", 10_000)),
                    normalize=bool(ctx.option("dsir_normalize", False)),
                    top_k=bool(ctx.option("dsir_top_k", ctx.option("top_k", False))),
                    smoothing=_smoothing(ctx.option("dsir_smoothing", 1.0)),
                    hashing=ctx.option("dsir_hashing", "sha256"),
                    min_tokens=int(ctx.option("dsir_min_tokens", 0)), seed=ctx.seed)
    return [load, dsir_stage(p, RecordTexts(ctx.records, include_system), targets, settings)]


def _smoothing(value: Any) -> float | str:
    if isinstance(value, str) and value.strip().lower() in ("reference", "laplace"):
        return "reference" if value.strip().lower() == "reference" else 1.0
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ShedkitError(f"dsir_smoothing must be a number or 'reference', got {value!r}") from None
