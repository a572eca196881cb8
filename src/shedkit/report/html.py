"""report.html: one self-contained page describing a run, rebuilt from the run directory alone.

It opens with what was asked and got, then shows the data (clusters with their proxies and
members, the highest- and lowest-scored rows, a 2-D map of the pool's embeddings), then the
numbers (charts, timings), and ends with versions and settings. It reads ``manifest.json``,
``scores.csv``, the pool (for row text) and, when present, ``work/valuation.json`` (SHED's
estimator result) and ``work/embedding_map.npy``. Charts are PNGs embedded as data URIs; there is no CSS or JS from outside,
so the page opens offline. Every piece of text is HTML-escaped: rows and paths are user data.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from shedkit.data.containers import atomic_write_text
from shedkit.errors import ShedkitError
from shedkit.report import data_view, plots

REPORT_NAME = "report.html"
VALUATION = Path("work") / "valuation.json"
GROUP_NAMES = {"cluster": "cluster", "dq_bin": "DQ bin"}  # categorical score columns: composition
GROUP_COLUMNS = tuple(GROUP_NAMES)
NOT_HISTOGRAMMED = ("row", "id", "selected", "is_proxy", *GROUP_COLUMNS)
LONG_TABLE = 40  # tables with more rows than this are folded into <details>

CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#212529;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #dee2e6;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
th,td{border:1px solid #dee2e6;padding:.2em .6em;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}
code{font-size:.9em;word-break:break-all}.note{color:#c92a2a}.muted{color:#868e96}
.bar{display:inline-block;height:.7em;background:#d9480f}img{max-width:100%}
figure{margin:1em 0}figcaption{font-size:.85em;color:#495057}
p.lead{font-size:1.15em}nav{font-size:.9em;margin-bottom:1em}
td .q{color:#495057}td .a{margin-top:.15em}td .member{margin-bottom:.4em}
.dot{color:#d9480f}table.facts th{font-weight:normal;color:#495057;white-space:nowrap}
""".strip()


@dataclass
class RunReport:
    html: str
    problems: list[str] = field(default_factory=list)  # what could not be shown, and why


@dataclass
class _Run:
    dir: Path
    manifest: dict[str, Any]
    scores: dict[str, list[str]] | None  # column -> cells, as read from scores.csv
    problems: list[str]

    def numeric(self, name: str) -> np.ndarray | None:
        """The column as floats (empty cells -> nan), or None when absent or not numeric."""
        if not self.scores or name not in self.scores:
            return None
        try:
            return np.array([float(c) if c.strip() else np.nan for c in self.scores[name]], dtype=float)
        except ValueError:
            return None

    @property
    def selected(self) -> np.ndarray:
        sel = self.numeric("selected")
        if sel is None:
            return np.zeros(len(next(iter(self.scores.values()), [])) if self.scores else 0, dtype=bool)
        return np.nan_to_num(sel) > 0


def write_report(run_dir: str | Path, by: Sequence[str] = (), records=None) -> Path:
    """Write ``run_dir/report.html`` (atomically) from the files in ``run_dir``; return its path.

    ``by`` names columns of the original pool rows to show the subset's composition by.
    ``records``: the pool's records when the caller holds them (an in-memory pool); otherwise
    the pool file named in the manifest is read back for the row text.
    """
    report = build_report(run_dir, by=by, records=records)
    return atomic_write_text(Path(run_dir) / REPORT_NAME, report.html)


def build_report(run_dir: str | Path, by: Sequence[str] = (), records=None) -> RunReport:
    run = _load_run(Path(run_dir))
    if records is None and run.scores and "row" in run.scores:
        pool, why = _load_pool(run)
        records = pool.records if pool is not None else None
        if pool is None and not str(_get(run.manifest, "pool", "path", default="")).startswith("<"):
            run.problems.append(why + "; row text is not shown")
    data = [view(run, records, _table, _Safe) for view in
            (data_view.overview, data_view.clusters, data_view.extremes, data_view.embedding_map)]
    sections = [
        *data, _cluster_values(run), _convergence(run),
        _histograms(run), *(_composition(run, col) for col in GROUP_COLUMNS),
        *(_composition_by(run, col, records) for col in dict.fromkeys(by)), _timings(run), _settings(run),
    ]
    sections = _unique_ids([s for s in sections if s is not None])
    method = _get(run.manifest, "method", "name", default="?")
    title = f"shedkit report: {method} on {Path(str(_get(run.manifest, 'pool', 'path', default='?'))).name}"
    nav = " · ".join(f'<a href="#{sid}">{escape(name)}</a>' for sid, name, _ in sections)
    notes = "".join(f'<li class="note">{escape(p)}</li>' for p in run.problems)
    body = "\n".join(f'<section id="{sid}">\n<h2>{escape(name)}</h2>\n{html}\n</section>' for sid, name, html in sections)
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        f"<h1>{escape(title)}</h1>\n<nav>{nav}</nav>\n"
        + (f"<ul>{notes}</ul>\n" if notes else "")
        + f"{body}\n</main>\n</body>\n</html>\n"
    )
    return RunReport(page, list(run.problems))


def _unique_ids(sections: list) -> list:
    """Suffix repeated section ids (two --by columns can slug alike: "a b", "a-b")."""
    seen: dict[str, int] = {}
    out = []
    for sid, name, html in sections:
        seen[sid] = seen.get(sid, 0) + 1
        out.append((sid if seen[sid] == 1 else f"{sid}-{seen[sid]}", name, html))
    return out


# -- loading ----------------------------------------------------------------------------------
def _load_run(run_dir: Path) -> _Run:
    if not run_dir.is_dir():
        raise ShedkitError(f"{run_dir}: no such run directory")
    path = run_dir / "manifest.json"
    if not path.is_file():
        raise ShedkitError(f"{run_dir} has no manifest.json: not a shedkit run directory (made by `shedkit select --out DIR`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ShedkitError(f"{path}: cannot read the manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise ShedkitError(f"{path}: the manifest is not a JSON object")
    problems: list[str] = []
    scores = None
    try:
        with open(run_dir / "scores.csv", newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        header, body = rows[0], rows[1:]
        scores = {name: [r[j] if j < len(r) else "" for r in body] for j, name in enumerate(header)}
    except (OSError, UnicodeDecodeError, IndexError, csv.Error) as exc:
        problems.append(f"scores.csv could not be read ({exc}); score charts and composition are left out")
    return _Run(run_dir, manifest, scores, problems)


def _get(obj: Any, *keys: str, default: Any = None) -> Any:
    for key in keys:
        if not isinstance(obj, dict) or key not in obj:
            return default
        obj = obj[key]
    return obj


def _dict(obj: dict, key: str) -> dict:
    """``obj[key]`` when it is a dict, else {} (a hand-edited manifest must not crash the report)."""
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


# -- HTML pieces ------------------------------------------------------------------------------
def _text(value: Any) -> str:
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, float):
        return escape(f"{value:.6g}")
    return escape(json.dumps(value, ensure_ascii=False, default=str))


class _Safe(str):
    """HTML this module built itself; table cells of this type are not escaped again."""


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A table with escaped cells (except :class:`_Safe` ones); long tables fold away."""
    rows = list(rows)
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    lines = []
    for row in rows:
        cells = []
        for cell in row:
            num = isinstance(cell, (int, float)) and not isinstance(cell, bool)
            content = cell if isinstance(cell, _Safe) else _text(cell)
            cells.append(f'<td class="num">{content}</td>' if num else f"<td>{content}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    table = f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(lines) + "\n</tbody>\n</table>"
    if len(rows) > LONG_TABLE:
        return f"<details><summary>table: {len(rows)} rows</summary>\n{table}\n</details>"
    return table


def _figure(png: bytes, caption: str) -> str:
    return (f'<figure><img src="{plots.data_uri(png)}" alt="{escape(caption)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def _note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


# -- sections: each returns (id, heading, html) or None ----------------------------------------
def _timings(run: _Run):
    stages = [(k, v) for k, v in _dict(run.manifest, "timings").items()]
    stages += [(f"method: {k}", v) for k, v in _dict(run.manifest, "method_timings").items()]
    stages = [(k, float(v)) for k, v in stages if isinstance(v, (int, float))]
    if not stages:
        return None
    top = max(v for _, v in stages) or 1.0
    rows = [(k, round(v, 4), _Safe(f'<span class="bar" style="width:{max(1, round(120 * v / top))}px"></span>'))
            for k, v in stages]
    note = '<p class="muted">Method stages are part of "select".</p>' if run.manifest.get("method_timings") else ""
    return "timings", "Timings", _table(["stage", "seconds", ""], rows) + note


def _groups(run: _Run, col: str):
    """(group keys, each group's first row, sizes, selected counts) of a categorical column."""
    labels = run.numeric(col)
    if labels is None or not np.isfinite(labels).any():
        return None
    ok = np.flatnonzero(np.isfinite(labels))
    keys, first, inverse, sizes = np.unique(labels[ok].astype(np.int64), return_index=True,
                                            return_inverse=True, return_counts=True)
    picked = np.bincount(inverse, weights=run.selected[ok], minlength=len(keys)).astype(np.int64)
    return keys.tolist(), ok[first], sizes.tolist(), picked.tolist()


def _cluster_values(run: _Run):
    values, groups = run.numeric("value"), _groups(run, "cluster")
    if values is None or groups is None:
        return None
    stderr = run.numeric("value_stderr")
    clusters, first, _, picked = groups
    vals = values[first]
    errs = None if stderr is None else stderr[first]
    if not np.isfinite(vals).any():
        return "values", "Cluster values", _note("the value column is empty")
    png = plots.value_bars(clusters, vals, errs, [p > 0 for p in picked])
    caption = (f"Value of each of {len(clusters)} clusters (its proxy's value), highest first"
               + ("; bars are ±1 standard error" if errs is not None else "")
               + "; clusters with at least one selected row are coloured.")
    return "values", "Cluster values", _figure(png, caption)


def _convergence(run: _Run):
    path = run.dir / VALUATION
    if not path.is_file():
        return None
    curves = _running_values(path)
    if curves is None:
        run.problems.append(f"{VALUATION} has no per-permutation history; no convergence plot")
        return None
    players, x, running, data = curves
    names = _player_names(run, players)
    order = np.argsort(-running[-1], kind="stable")[: plots.MAX_CURVES]
    png = plots.convergence(x, running[:, order], [names[i] for i in order])
    what = "each player" if len(players) <= plots.MAX_CURVES else f"the {len(order)} highest-valued of {len(players)} players"
    keys = ("estimator", "stopped_by", "n_permutations", "n_evaluations", "n_computed", "n_reused", "v_empty", "v_full", "elapsed", "seed")
    facts = [(k, data[k]) for k in keys if data.get(k) is not None]
    html = _figure(png, f"Running mean of the value of {what} against permutations.")
    return "convergence", "Estimator convergence", html + "\n" + _table(["", ""], facts)


def _running_values(path: Path):
    """(players, permutations done, running means [samples, players], raw dict) or None."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        players = [str(p) for p in data["players"]]
        marg = np.array([[np.nan if v is None else v for v in row] for row in data["marginals"]], dtype=float)
        unit = max(1, int(data.get("unit_size") or 1))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if marg.ndim != 2 or marg.shape[1] != len(players) or marg.shape[0] < unit or not players:
        return None
    n = marg.shape[0] // unit
    units = marg[: n * unit].reshape(n, unit, -1).mean(axis=1)
    seen = np.cumsum(np.isfinite(units), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        running = np.nancumsum(units, axis=0) / seen
    return players, np.arange(1, n + 1) * unit, running, data


def _player_names(run: _Run, players: list[str]) -> list[str]:
    """Label a proxy (a record id) by its cluster, read from scores.csv."""
    names = {}
    if run.scores and "cluster" in run.scores and "id" in run.scores:
        proxy = run.scores.get("is_proxy", ["1"] * len(run.scores["id"]))
        for rid, c, p in zip(run.scores["id"], run.scores["cluster"], proxy):
            if p.strip() in ("1", "True", "true") and rid not in names:
                names[rid] = f"cluster {c}"
    return [names.get(p, p[:12]) for p in players]


def _histograms(run: _Run):
    if not run.scores:
        return None
    sel, parts = run.selected, []
    for name in run.scores:
        col = run.numeric(name)
        if name in NOT_HISTOGRAMMED or col is None:
            continue
        ok = np.isfinite(col)
        if not ok.any():
            parts.append(_note(f"{name}: no finite values"))
            continue
        png = plots.histogram(name, col[ok & sel], col[ok & ~sel])
        dropped = f"; {int((~ok).sum())} empty or infinite values left out" if (~ok).any() else ""
        parts.append(_figure(png, f"{name}: selected vs not selected{dropped}."))
    if not parts:
        return None
    return "scores", "Score distributions", "\n".join(parts)


def _composition(run: _Run, col: str):
    groups = _groups(run, col)
    if groups is None:
        return None
    keys, first, sizes, picked = groups
    what = title = GROUP_NAMES[col]
    header = [what, "rows", "selected", "selected share"]
    rows = [[k, n, p, round(p / n, 4)] for k, n, p in zip(keys, sizes, picked)]
    values, stderr = run.numeric("value"), run.numeric("value_stderr")
    if col == "cluster" and values is not None:  # highest value first, as in the value chart
        header += ["value", "stderr"]
        for row, i in zip(rows, first):
            row += [float(values[i]), float(stderr[i]) if stderr is not None else ""]
        rows.sort(key=lambda r: -r[4] if np.isfinite(r[4]) else np.inf)
        what = "cluster (highest value first)"
    png = plots.composition_bars([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], what)
    html = _figure(png, f"Rows per {what} in the pool and in the subset.") + "\n" + _table(header, rows)
    return f"by-{col}", f"Composition by {title}", html


def _composition_by(run: _Run, column: str, records=None):
    sid, title = f"by-row-{_slug(column)}", f"Composition by {column}"
    if not run.scores or "row" not in run.scores:
        return sid, title, _note("scores.csv with a row column is needed to join the pool rows")
    if records is None:
        pool, why = _load_pool(run)
        if pool is None:
            run.problems.append(why)
            return sid, title, _note(why)
        records = pool.records
    by_index = {str(r.index): r.row for r in records}
    keys = [_group_key(by_index[r.strip()], column) for r in run.scores["row"]]
    if all(k is None for k in keys):
        cols = sorted({c for row in by_index.values() for c in row})
        why = f"no pool row has a column '{column}' (columns: {', '.join(cols)})"
        run.problems.append(why)
        return sid, title, _note(why)
    sel = run.selected
    total, chosen = {}, {}
    for key, s in zip(keys, sel):
        key = "(missing)" if key is None else key
        total[key] = total.get(key, 0) + 1
        chosen[key] = chosen.get(key, 0) + int(s)
    n_sel = max(1, int(sel.sum()))
    order = sorted(total, key=lambda k: (-total[k], k))
    rows = [(k, total[k], chosen[k], round(total[k] / len(keys), 4), round(chosen[k] / n_sel, 4)) for k in order]
    png = plots.composition_bars(order, [total[k] for k in order], [chosen[k] for k in order], column)
    header = [column, "pool rows", "selected", "share of pool", "share of subset"]
    return sid, title, _figure(png, f"Rows per {column} in the pool and in the subset.") + "\n" + _table(header, rows)


def _group_key(row: Any, column: str) -> str | None:
    if not isinstance(row, dict) or column not in row or row[column] is None:
        return None
    value = row[column]
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text)


def _load_pool(run: _Run):
    """(the run's pool, reloaded and checked against scores.csv's ids, "") or (None, why)."""
    from shedkit.data.pool import load_pool

    info = _dict(run.manifest, "pool")
    raw = info.get("path")
    if not raw:
        return None, "the manifest does not name the pool file"
    path = Path(raw)
    candidates = [path] + ([] if path.is_absolute() else [d / path for d in (run.dir, *run.dir.resolve().parents)])
    found = next((p for p in candidates if p.exists()), None)
    if found is None:
        return None, f"the pool file {raw} is gone, so the composition by pool columns cannot be shown"
    try:
        pool = load_pool(found, format=info.get("format"), fields=info.get("field_map") or None, skip_empty=True)
    except (ShedkitError, OSError) as exc:
        return None, f"the pool file {found} cannot be read any more ({exc})"
    ids = {str(r.index): r.id for r in pool.records}
    want = run.scores.get("id") or [None] * len(run.scores["row"])
    for row, rid in zip(run.scores["row"], want):
        have = ids.get(row.strip())
        if have is None or (rid is not None and have != rid):
            return None, f"the pool file {found} has changed since the run (row {row} differs)"
    return pool, ""


def _settings(run: _Run):
    m = run.manifest
    config = _dict(m, "config")
    method = {k: v for k, v in _dict(m, "method").items() if k != "name"}
    html = _table(["setting", "value"], sorted(config.items())) if config else _note("the manifest has no config")
    if method:
        html += "\n<h3>Method details</h3>\n" + _table(["", ""], sorted(method.items()))
    run_facts = [
        ("created", m.get("created")),
        ("git", _get(m, "environment", "git") or "not a git checkout"),
        ("python", f"{_get(m, 'environment', 'python', default='?')} on {_get(m, 'environment', 'platform', default='?')}"),
    ]
    html += "\n<h3>Run</h3>\n" + _table(["", ""], [(k, v if v is not None else "") for k, v in run_facts])
    versions = _get(m, "environment", "packages", default={}) or {}
    if isinstance(versions, dict) and versions:
        html += "\n<h3>Versions</h3>\n" + _table(["package", "version"], sorted(versions.items()))
    return "settings", "Versions and settings", html
