"""`shedkit select`: load the pool, run one method, write subset + scores + manifest + report.

Nothing is written before the inputs are validated; every output is written atomically, and
if the run fails with a user error, the final outputs this run created are removed; what an
earlier run made, and the finished stages under ``work/``, are kept for the next run.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from shedkit.data.containers import atomic_write_json
from shedkit.data.pool import Pool, load_pool
from shedkit.data.records import Record
from shedkit.errors import ShedkitError
from shedkit.pipeline.methods import get_method
from shedkit.pipeline.methods.base import MethodContext, MethodResult
from shedkit.pipeline.options import check_options
from shedkit.pipeline.paths import default_cache_dir
from shedkit.report.manifest import Timer, environment
from shedkit.report.scores import write_scores
from shedkit.selectors.budget import resolve_budget


@dataclass
class SelectionResult:
    pool: Pool
    method: str
    budget: int
    positions: np.ndarray  # indices into pool.records, sorted
    columns: dict[str, Any]
    manifest: dict[str, Any]
    out_dir: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def records(self) -> list[Record]:
        return [self.pool.records[i] for i in self.positions]

    @property
    def rows(self) -> list[int]:
        """0-based positions of the selected rows in the input file."""
        return [self.pool.records[i].index for i in self.positions]

    @property
    def subset(self) -> Any:
        """The selected rows, unchanged, as the input's own type: a list of dicts, a pandas
        DataFrame (``iloc``, index kept), a ``datasets.Dataset`` (``select``), a DatasetDict
        (the chosen split subset, other splits as they were); for a file pool, the subset file's
        path when written (``out=``), else the selected rows as a list of dicts."""
        if self.pool.source is not None:
            return self.pool.subset(self.rows)
        if "subset" in self.files:
            return self.files["subset"]
        return [self.pool.table.rows[i] for i in self.rows]

    @property
    def scores(self):
        """One row per pool record, as scores.csv: ``row`` (position in the input), ``id``,
        ``selected`` and the method's columns (cluster, value, learnability, ...)."""
        from shedkit.errors import require

        pd = require("pandas", "models", "the scores DataFrame")
        records = self.pool.records
        data = {"row": [r.index for r in records], "id": [r.id for r in records], "selected": self.selected_mask}
        data.update({name: list(values) for name, values in self.columns.items()})
        return pd.DataFrame(data)

    @property
    def selected_mask(self) -> np.ndarray:
        mask = np.zeros(len(self.pool.records), dtype=bool)
        mask[self.positions] = True
        return mask


def select(
    pool: Any,
    method: str = "random",
    budget: str | float | int = 0.1,
    seed: int = 0,
    out: str | Path | None = None,
    format: str | None = None,
    fields: Mapping[str, str] | list[str] | None = None,
    dedup: bool = False,
    skip_empty: bool = False,
    cache_dir: str | Path | None = None,
    command: list[str] | None = None,
    split: str | None = None,
    **options: Any,
) -> SelectionResult:
    """Select ``budget`` rows of ``pool`` with ``method``; write outputs to ``out`` if given.

    ``pool``: a file path (any supported format), a list of dicts, a pandas DataFrame, a
    ``datasets.Dataset`` or a ``DatasetDict`` with ``split=``. The result's ``.subset`` is
    the selected rows as the same type, unchanged; ``.scores`` is a DataFrame (scores.csv).
    Method-specific settings (``target=``, ``clusters=``, ``model=``, ...) go in ``options``:
    the fields of the method's ``Options`` dataclass (``shedkit.pipeline.options``); any other
    name is an error that names the closest option.
    """
    timer = Timer()
    run = get_method(method)
    check_options(method, options)
    if options.get("chat_template"):  # a file path (or the template's text) -> the text
        from shedkit.models.encode import read_chat_template

        options["chat_template"] = read_chat_template(options["chat_template"])
    with timer("load"):
        if not isinstance(pool, Pool):
            pool = load_pool(pool, format=format, fields=fields, dedup=dedup, skip_empty=skip_empty, split=split)
    n = len(pool.records) if method == "full" else resolve_budget(budget, len(pool.records))
    out_dir = Path(out) if out is not None else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise ShedkitError(f"--out {out_dir} exists and is not a directory")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    with _cleanup_on_error(out_dir):
        ctx = MethodContext(
            records=pool.records, budget=n, seed=int(seed), options=dict(options),
            run_dir=out_dir if out_dir is not None else cache / "scratch", cache_dir=cache, method=method,
        )
        if options.get("dry_run"):  # plan, print, write work/dry_run.json and raise DryRunFinished
            from shedkit.pipeline.planning import dry_run

            dry_run(ctx, load_seconds=timer.seconds.get("load"))
        with timer("select"):
            result = run(ctx)
        positions = _check_selection(result, n, len(pool.records), method)
        columns = dict(result.columns)
        manifest = _manifest(pool, method, n, seed, options, result, timer, command, budget_asked=budget,
                             format=format, fields=fields, dedup=dedup, skip_empty=skip_empty,
                             **({"split": split} if split is not None else {}))
        selection = SelectionResult(pool, method, n, positions, columns, manifest, out_dir)
        if out_dir is not None:
            _write_embedding_map(selection, method, options, cache)
            _write_outputs(selection, timer)
    return selection


def _check_selection(result: MethodResult, n: int, size: int, method: str) -> np.ndarray:
    positions = np.asarray(result.selected, dtype=np.int64)
    if len(positions) != n or len(np.unique(positions)) != n:
        raise RuntimeError(f"method '{method}' returned {len(np.unique(positions))} distinct rows, expected {n}")
    if n and (positions.min() < 0 or positions.max() >= size):
        raise RuntimeError(f"method '{method}' returned a row outside the pool")
    return np.sort(positions)


def _manifest(pool, method, n, seed, options, result, timer, command, **load_opts) -> dict[str, Any]:
    return {
        "shedkit_command": command if command is not None else list(sys.argv),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "pool": {
            "path": str(pool.path) if pool.source is not None else str(Path(pool.path).resolve()),
            "input": pool.source.kind if pool.source is not None else "file",
            "container": pool.container, "format": pool.format,
            "field_map": pool.field_map, "mapping": pool.mapping, "rows": pool.num_rows, "records": len(pool.records),
            "duplicates": len(pool.duplicates), "duplicates_dropped": pool.dedup,
            "skipped_empty": pool.skipped_empty,
        },
        "method": {"name": method, **result.info},
        "config": {"method": method, "seed": int(seed), **load_opts, **{k: v for k, v in options.items()}},
        "seed": int(seed),
        "counts": {"pool": len(pool.records), "budget": n, "selected": n},
        "environment": environment(),
        "timings": {},  # filled when written
        "method_timings": {k: round(float(v), 4) for k, v in result.timings.items()},
    }


def _write_outputs(sel: SelectionResult, timer: Timer) -> None:
    out = sel.out_dir
    out.mkdir(parents=True, exist_ok=True)
    with timer("write"):
        subset = sel.pool.write_subset(sel.rows, out / sel.pool.subset_filename())
        records = sel.pool.records
        scores = write_scores(
            out / "scores.csv", [r.index for r in records], [r.id for r in records],
            sel.selected_mask, sel.columns,
        )
    sel.files.update(subset=subset, scores=scores)
    sel.manifest["timings"] = {k: round(v, 4) for k, v in timer.seconds.items()}
    sel.files["manifest"] = atomic_write_json(out / "manifest.json", sel.manifest)
    try:
        from shedkit.report.html import write_report
    except ImportError:  # the report module is optional at this stage; the run stays usable
        return
    with timer("report"):  # the report is rebuilt from the directory alone (shedkit report DIR)
        try:
            sel.files["report"] = write_report(out, records=sel.pool.records)
        except Exception as exc:  # noqa: BLE001 - a report problem must not lose a finished selection
            import warnings

            warnings.warn(f"report.html was not written ({exc}); rebuild it with: shedkit report {out}", stacklevel=2)
            return
    sel.manifest["timings"]["report"] = round(timer.seconds["report"], 4)
    atomic_write_json(out / "manifest.json", sel.manifest)


EMBEDDING_METHODS = ("shed-qocs", "shed-qwcs", "dq")


def _write_embedding_map(sel: SelectionResult, method: str, options: Mapping[str, Any], cache: Path) -> None:
    """``work/embedding_map.npy``: the pool's embeddings on their first two principal
    components, for the report's map. Only for methods that embedded the pool: the vectors
    then come from the embedding cache (no model run); any problem just leaves the map out."""
    if method not in EMBEDDING_METHODS and "embedder" not in options:
        return
    import io
    import warnings

    from shedkit.data.containers import atomic_write_bytes
    from shedkit.report.data_view import MAP_FILE, pca_2d

    try:
        from shedkit.embed import embed_records

        vectors = embed_records(sel.pool.records, embedder=options.get("embedder") or "all-MiniLM-L6-v2",
                                cache_dir=cache, device=options.get("device"), progress=False,
                                include_system=bool(options.get("embed_system", False)))
        buf = io.BytesIO()
        np.save(buf, pca_2d(vectors), allow_pickle=False)
        (sel.out_dir / MAP_FILE).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(sel.out_dir / MAP_FILE, buf.getvalue())
    except Exception as exc:  # noqa: BLE001 - the map is a picture; the selection stands without it
        warnings.warn(f"the report's map was left out ({exc})", stacklevel=2)


class _cleanup_on_error:
    """On a ShedkitError, remove the final outputs this run created under ``out_dir`` and
    nothing else: what existed before is never touched, and ``work/`` (finished stages, each
    with its completion marker, which the next run reuses) is kept even when this run made it.
    An output directory left empty is removed, so a run that failed early leaves no trace."""

    KEEP = ("work",)

    def __init__(self, out_dir: Path | None):
        self.out_dir = out_dir

    def __enter__(self):
        self.existed = self.out_dir is not None and self.out_dir.exists()
        self.before = set(self.out_dir.iterdir()) if self.existed else set()
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None or self.out_dir is None or not issubclass(exc_type, ShedkitError):
            return False
        if not self.out_dir.exists():
            return False
        for entry in set(self.out_dir.iterdir()) - self.before:
            if entry.name in self.KEEP:
                continue
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        if not self.existed:
            work = self.out_dir / "work"
            if work.is_dir() and not any(work.iterdir()):
                work.rmdir()
            if not any(self.out_dir.iterdir()):
                self.out_dir.rmdir()
        return False
