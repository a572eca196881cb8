"""The report's sections that show the data itself: what was asked and got, the clusters with
their proxies and members, the highest- and lowest-scored rows, and a 2-D map of the pool.

Row text is user data: every piece is truncated and HTML-escaped here before it reaches the page.
"""

from __future__ import annotations

import shlex
from html import escape
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from shedkit.report import plots

MAP_FILE = Path("work") / "embedding_map.npy"  # (N, 2) float32: PCA of the pool's embeddings
TEXT_CHARS = 160  # each piece of row text shown is cut to this many characters
MEMBERS_SHOWN = 3  # member rows shown per cluster
CLUSTERS_OPEN = 12  # clusters listed before the rest fold into <details>
EXTREMES = 5  # rows shown at each end of the method's score
# the column that is "the method's score", most specific first (any other numeric column after)
SCORE_COLUMNS = ("learnability", "row_value", "first_order", "hybrid_score", "dsir_logw", "ifd",
                 "loss", "loss_base", "value")
NOT_SCORES = {"row", "id", "selected", "is_proxy", "cluster", "dq_bin", "value_stderr", "value_count",
              "n_tokens", "dsir_target"}
CATEGORY_MAX = 12  # a pool column with 2..12 distinct string values is shown as the composition


def short(text: Any, chars: int = TEXT_CHARS) -> str:
    """One line of at most ``chars`` characters, escaped; the cut is marked with an ellipsis."""
    flat = " ".join(str(text).split())
    if len(flat) > chars:
        flat = flat[: chars - 1].rstrip() + "…"
    return escape(flat)


def row_html(record, picked: bool = False) -> str:
    """A record as two short lines: the instruction (user turns) and the response; a selected
    row's first line starts with a dot."""
    dot = '<span class="dot">●</span> ' if picked else ""
    if record is None:
        return f'{dot}<span class="muted">(row text not available)</span>'
    return (f'<div class="q">{dot}{short(record.instruction or "(no instruction)")}</div>'
            f'<div class="a">{short(record.response)}</div>')


def by_row(records) -> dict[int, Any]:
    return {} if records is None else {int(r.index): r for r in records}


# -- what was asked and got ------------------------------------------------------------------
def overview(run, records, table, safe) -> tuple[str, str, str]:
    m = run.manifest
    counts = _d(m, "counts")
    pool = _d(m, "pool")
    method = _d(m, "method").get("name", "?")
    sel = run.selected
    n_pool = int(counts.get("pool") or len(sel) or 0)
    n_sel = int(counts.get("selected") or sel.sum())
    share = f" ({100.0 * n_sel / n_pool:.1f}%)" if n_pool else ""
    name = Path(str(pool.get("path", "?"))).name
    head = (f'<p class="lead"><b>{escape(str(method))}</b> selected <b>{n_sel}</b> of {n_pool} rows{share} '
            f"from <code>{escape(name)}</code>.</p>")
    asked = _d(m, "config").get("budget_asked", counts.get("budget", "?"))
    command = m.get("shedkit_command")
    rows = [
        ("method", method),
        ("budget", f"{asked} → {counts.get('budget', '?')} rows"),
        ("pool", f"{pool.get('path', '?')}"),
        ("read as", pool.get("mapping") or f"{pool.get('format', '?')} ({pool.get('container', '?')})"),
        ("pool rows", f"{pool.get('records', n_pool)} used of {pool.get('rows', '?')}"
         f" ({pool.get('duplicates', 0)} duplicates, {'dropped' if pool.get('duplicates_dropped') else 'kept'})"),
        ("subset", f"{n_sel} rows, written in the pool's own format" if pool.get("input", "file") == "file"
         else f"{n_sel} rows, returned as the input's type ({pool.get('input')}); written as "
              f"{'subset' if pool.get('container') == 'hf' else 'subset.jsonl'}"),
        ("seed", m.get("seed", "?")),
        ("command", shlex.join(map(str, command)) if isinstance(command, list) else command),
    ]
    rows += _composition_facts(run, records)
    rows += truncation_facts(_d(m, "method").get("truncation"))
    return "summary", "What you asked for and got", head + "\n" + facts_table(rows)


def truncation_facts(truncation) -> list[tuple[str, str]]:
    """One fact per stage that cut rows to ``max_length`` (the manifest's method.truncation:
    {stage: {rows, truncated_rows, dropped_tokens, max_length}}); stages that cut nothing are
    summed up in one line."""
    if not isinstance(truncation, dict):
        return []
    facts, clean = [], []
    for stage, t in truncation.items():
        if not isinstance(t, dict) or "truncated_rows" not in t:
            continue
        name = str(stage).replace("_", " ")
        if t["truncated_rows"]:
            facts.append((f"truncated ({name})", f"{t['truncated_rows']} of {t.get('rows', '?')} rows longer than "
                                                  f"max_length {t.get('max_length', '?')}: {t.get('dropped_tokens', '?')} "
                                                  f"tokens cut (prompt first)"))
        else:
            clean.append(name)
    if clean:
        facts.append(("not truncated", ", ".join(clean) + ": every row fits max_length"))
    return facts


def facts_table(rows) -> str:
    """A two-column table of (name, value) facts, no header; every cell escaped."""
    body = "".join(f"<tr><th>{escape(str(k))}</th><td>{escape('' if v is None else str(v))}</td></tr>" for k, v in rows)
    return f'<table class="facts">\n<tbody>{body}</tbody>\n</table>'


def _composition_facts(run, records) -> list[tuple[str, str]]:
    facts = []
    sel = run.selected
    for col, what in (("cluster", "clusters"), ("dq_bin", "DQ bins")):
        labels = run.numeric(col)
        if labels is not None and np.isfinite(labels).any():
            ok = np.isfinite(labels)
            total = len(np.unique(labels[ok]))
            hit = len(np.unique(labels[ok & sel]))
            facts.append((f"subset's {what}", f"rows from {hit} of {total} {what}"))
    rows = by_row(records)
    if rows and run.scores and "row" in run.scores:
        idx = [int(r) for r in run.scores["row"]]
        lengths = np.array([len(rows[i].response) if i in rows else np.nan for i in idx], dtype=float)
        if np.isfinite(lengths).any() and sel.any():
            facts.append(("response length", f"{np.nanmean(lengths[sel]):.0f} characters on average in the subset, "
                                             f"{np.nanmean(lengths):.0f} in the pool"))
        column, keys = category_column([rows.get(i) for i in idx])
        if column is not None:
            facts.append((f"by {column}", _shares(keys, sel)))
    return facts


def category_column(records: Sequence[Any]) -> tuple[str | None, list]:
    """The first column of the original rows with 2..CATEGORY_MAX distinct short string values
    on most rows (a source, category or task label), and each row's value."""
    rows = [getattr(r, "row", None) for r in records]
    if not rows or not isinstance(rows[0], dict):
        return None, []
    for column in rows[0]:
        values = [r.get(column) if isinstance(r, dict) else None for r in rows]
        strings = [v for v in values if isinstance(v, str)]
        distinct = set(strings)
        if len(strings) >= 0.5 * len(rows) and 2 <= len(distinct) <= CATEGORY_MAX and max(map(len, distinct)) <= 40:
            return column, values
    return None, []


def _shares(keys: list, sel: np.ndarray) -> str:
    names = sorted({str(k) for k in keys}, key=lambda k: -sum(str(x) == k for x in keys))
    n_sel = max(1, int(sel.sum()))
    parts = []
    for name in names:
        pool_share = sum(str(k) == name for k in keys) / len(keys)
        sub_share = sum(str(k) == name for k, s in zip(keys, sel) if s) / n_sel
        parts.append(f"{name} {100 * sub_share:.0f}% (pool {100 * pool_share:.0f}%)")
    return "; ".join(parts)


# -- clusters ---------------------------------------------------------------------------------
def clusters(run, records, table, safe):
    labels = run.numeric("cluster")
    if labels is None or not np.isfinite(labels).any() or not run.scores or "row" not in run.scores:
        return None
    rows = by_row(records)
    idx = np.array([int(r) for r in run.scores["row"]])
    sel = run.selected
    values, stderr = run.numeric("value"), run.numeric("value_stderr")
    proxy = run.numeric("is_proxy")
    ok = np.isfinite(labels)
    keys = np.unique(labels[ok]).astype(int)
    info = []
    for c in keys:
        members = np.flatnonzero(ok & (labels == c))
        value = float(values[members[0]]) if values is not None else np.nan
        err = float(stderr[members[0]]) if stderr is not None else np.nan
        is_proxy = members[np.nan_to_num(proxy[members]) > 0] if proxy is not None else members[:0]
        info.append((c, members, value, err, is_proxy))
    info.sort(key=lambda t: (-t[2] if np.isfinite(t[2]) else np.inf, -len(t[1])))
    header = ["cluster", "rows", "selected", "value ± stderr", "proxy", f"members (up to {MEMBERS_SHOWN}, selected first)"]
    lines = []
    for c, members, value, err, prox in info:
        val = "" if not np.isfinite(value) else (f"{value:.4g}" + (f" ± {err:.2g}" if np.isfinite(err) else ""))
        proxy_html = row_html(rows.get(int(idx[prox[0]])), bool(sel[prox[0]])) if len(prox) else '<span class="muted">—</span>'
        order = sorted((m for m in members if not len(prox) or m != prox[0]), key=lambda m: (not sel[m], m))
        shown = "".join(f'<div class="member">{row_html(rows.get(int(idx[m])), bool(sel[m]))}</div>'
                        for m in order[:MEMBERS_SHOWN])
        lines.append([int(c), len(members), int(sel[members].sum()), val, safe(proxy_html), safe(shown or "—")])
    note = "" if rows else ('<p class="muted">Row text is not shown: the pool could not be read back '
                            "(an in-memory pool, or a file that moved).</p>")
    order = "highest value first" if values is not None else "largest first"
    html = f'<p class="muted">{len(info)} clusters, {order}. Selected rows are marked <span class="dot">●</span>.</p>' + note
    html += table(header, lines[:CLUSTERS_OPEN])
    if len(lines) > CLUSTERS_OPEN:
        html += f"<details><summary>the other {len(lines) - CLUSTERS_OPEN} clusters</summary>{table(header, lines[CLUSTERS_OPEN:])}</details>"
    return "clusters", "Clusters", html


# -- highest and lowest rows ------------------------------------------------------------------
def score_column(run) -> str | None:
    if not run.scores:
        return None
    names = [c for c in SCORE_COLUMNS if c in run.scores]
    names += [c for c in run.scores if c not in NOT_SCORES and c not in names]
    for name in names:
        col = run.numeric(name)
        if col is not None and np.isfinite(col).sum() >= 2 and np.nanstd(col[np.isfinite(col)]) > 0:
            return name
    return None


def extremes(run, records, table, safe):
    name = score_column(run)
    if name is None or "row" not in run.scores:
        return None
    col = run.numeric(name)
    rows = by_row(records)
    idx = [int(r) for r in run.scores["row"]]
    sel = run.selected
    finite = np.flatnonzero(np.isfinite(col))
    order = finite[np.argsort(-col[finite], kind="stable")]
    k = min(EXTREMES, len(order) // 2) or 1
    header = ["row", name, "selected", "instruction / response"]

    def lines(positions):
        return [[idx[p], float(col[p]), "yes" if sel[p] else "", safe(row_html(rows.get(idx[p]), bool(sel[p])))] for p in positions]

    html = (f'<p class="muted">Rows ranked by <code>{escape(name)}</code> '
            f"({len(finite)} rows with a value).</p>"
            f"<h3>Highest</h3>{table(header, lines(order[:k]))}<h3>Lowest</h3>{table(header, lines(order[::-1][:k]))}")
    return "extremes", f"Highest- and lowest-scored rows ({name})", html


# -- the map ----------------------------------------------------------------------------------
def pca_2d(embeddings: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """The rows projected on their first two principal components (N, 2), float32; the sign of
    each component is fixed (largest loading positive) so the picture is reproducible.

    From the d x d covariance, accumulated over row chunks in float64 (memory O(chunk x d + d^2)
    whatever N; an SVD of the centred N x d matrix held ~1.2 GB more at 100k x 384 and took 4x
    longer), then its top two eigenvectors: the same directions as the SVD's (up to the fixed sign)."""
    x = np.asarray(embeddings)
    n = len(x)
    if n < 2:
        return np.zeros((n, 2), dtype=np.float32)
    mean = np.zeros(x.shape[1])
    for i in range(0, n, chunk):
        mean += x[i : i + chunk].sum(axis=0, dtype=np.float64)
    mean /= n
    cov = np.zeros((x.shape[1], x.shape[1]))
    for i in range(0, n, chunk):
        c = x[i : i + chunk].astype(np.float64) - mean
        cov += c.T @ c
    vals, vecs = np.linalg.eigh(cov)  # ascending
    k = min(2, x.shape[1])
    comps = vecs[:, ::-1][:, :k].T
    comps = comps[vals[::-1][:k] > 1e-12 * max(float(vals[-1]), 1e-300)]  # drop null directions
    signs = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(axis=1)])
    comps = comps * signs[:, None]
    xy = np.zeros((n, 2), dtype=np.float32)
    for i in range(0, n, chunk):
        xy[i : i + chunk, : len(comps)] = (x[i : i + chunk].astype(np.float64) - mean) @ comps.T
    return xy


def embedding_map(run, records, table, safe):
    path = run.dir / MAP_FILE
    if not path.is_file():
        why = ("this method uses no embeddings" if _d(run.manifest, "method").get("name") in ("random", "dsir", "full", "lobass")
               else "no embeddings were saved for this run")
        return "map", "Map of the pool", f'<p class="muted">No map: {escape(why)}.</p>'
    try:
        xy = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        run.problems.append(f"{MAP_FILE} could not be read ({exc}); no map")
        return None
    sel = run.selected
    if xy.ndim != 2 or xy.shape[1] != 2 or len(xy) != len(sel):
        run.problems.append(f"{MAP_FILE} does not match scores.csv ({xy.shape} for {len(sel)} rows); no map")
        return None
    labels = run.numeric("cluster")
    png = plots.embedding_map(xy, labels, sel)
    what = "colour = cluster, " if labels is not None else ""
    caption = (f"The pool's embeddings projected on their first two principal components ({len(xy)} rows; "
               f"{what}black rings = the {int(sel.sum())} selected rows).")
    return "map", "Map of the pool", (f'<figure><img src="{plots.data_uri(png)}" alt="{escape(caption)}">'
                                      f"<figcaption>{escape(caption)}</figcaption></figure>")


def _d(obj: dict, key: str) -> dict:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, dict) else {}
