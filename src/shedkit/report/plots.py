"""The report's charts as PNG bytes (matplotlib, Agg canvas; no pyplot, no global state).

Every function takes plain arrays and returns the PNG's bytes; :func:`data_uri` turns them into
a ``data:image/png;base64,`` URI so the report stays a single self-contained file.
"""

from __future__ import annotations

import base64
import io
from typing import Sequence

import numpy as np

SELECTED = "#d9480f"  # selected rows / clusters
OTHER = "#868e96"  # not selected
MAX_CURVES = 8  # convergence: at most this many players are drawn (the top by final value)
MANY_BARS = 150  # above this, bars are drawn as one line collection (thousands of patches are slow)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure(width: float = 7.0, height: float = 3.2, bottom: float = 0.16, right: float = 0.98, top: float = 0.95):
    """A figure on an Agg canvas with fixed margins (a layout engine doubles the drawing time)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=1.0 / width, right=right, top=top, bottom=bottom)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _label_margin(labels: Sequence, count: int) -> float:
    """Bottom margin that fits rotated tick labels (up to 20 characters), or just the x label."""
    if count > 40:
        return 0.1
    longest = max((len(str(x)[:20]) for x in labels), default=1)
    return min(0.45, 0.17 + 0.014 * longest)


def _legend_above(ax) -> None:
    """Legend in one row above the axes, where it never hides data (figure made with top=0.86)."""
    ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=2, frameon=False)


def _bars(ax, x: np.ndarray, heights, colors, bottom=0.0, label: str | None = None) -> None:
    """Bars at ``x``; one line per bar (a single collection) when there are many."""
    if len(x) <= MANY_BARS:
        ax.bar(x, np.asarray(heights, dtype=float) - bottom, bottom=bottom, color=colors, width=0.85, label=label)
    else:
        width = max(0.3, 0.8 * 72 * ax.get_position().width * ax.figure.get_figwidth() / len(x))
        ax.vlines(x, bottom, heights, colors=colors, linewidth=width, label=label)
        ax.set_xlim(-1, len(x))


def _ticks(ax, x: np.ndarray, labels: Sequence) -> None:
    if len(x) <= 40:
        ax.set_xticks(x, [str(g)[:20] for g in labels], fontsize=7, rotation=90)
    else:
        ax.set_xticks([])


def value_bars(
    clusters: Sequence[int],
    values: Sequence[float],
    stderr: Sequence[float] | None,
    selected: Sequence[bool],
) -> bytes:
    """Cluster values sorted high to low, ±1 standard error, clusters with selected rows highlighted."""
    values = np.asarray(values, dtype=float)
    order = np.argsort(-values, kind="stable")
    picked = np.asarray(selected, dtype=bool)[order]
    x = np.arange(len(order))
    fig = _figure(width=min(12.0, max(6.0, 0.15 * len(order))), bottom=_label_margin(clusters, len(order)))
    ax = fig.add_subplot()
    colors = np.where(picked, SELECTED, OTHER)
    err = None
    if stderr is not None:
        err = np.nan_to_num(np.asarray(stderr, dtype=float)[order], nan=0.0)
    _bars(ax, x, values[order], colors)
    if err is not None:
        thin = len(x) > MANY_BARS
        ax.vlines(x, values[order] - err, values[order] + err, colors="black",
                  linewidth=0.3 if thin else 0.8, alpha=0.5 if thin else 1.0)
    ax.axhline(0.0, color="black", linewidth=0.6)
    _ticks(ax, x, [clusters[i] for i in order])
    ax.set_xlabel(f"cluster, by value ({int(picked.sum())} of {len(order)} with selected rows in colour)")
    ax.set_ylabel("value" + (" ± stderr" if err is not None else ""))
    return _png(fig)


def convergence(permutations: Sequence[int], curves: np.ndarray, labels: Sequence[str]) -> bytes:
    """Running mean of each player's value (columns of ``curves``) against permutations done."""
    from matplotlib.ticker import MaxNLocator

    curves = np.asarray(curves, dtype=float)
    fig = _figure(width=8.0, right=0.8)
    ax = fig.add_subplot()
    marker = "o" if len(permutations) <= 30 else None
    for j, label in enumerate(labels):
        ax.plot(permutations, curves[:, j], linewidth=1.2, marker=marker, markersize=3, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("permutations")
    ax.set_ylabel("running mean of value")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _png(fig)


def histogram(name: str, selected: np.ndarray, other: np.ndarray, bins: int = 30) -> bytes:
    """Overlaid histograms of one score, selected vs not selected, each as a share of its group."""
    both = np.concatenate([selected, other])
    lo, hi = float(both.min()), float(both.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    fig = _figure(width=5.5, height=2.8, bottom=0.2, top=0.86)
    ax = fig.add_subplot()
    for data, color, label in ((other, OTHER, "not selected"), (selected, SELECTED, "selected")):
        if len(data):
            weights = np.full(len(data), 1.0 / len(data))
            ax.hist(data, bins=edges, weights=weights, color=color, alpha=0.5, histtype="stepfilled",
                    label=f"{label} (n={len(data)})")
    ax.set_xlabel(name)
    ax.set_ylabel("share of group")
    _legend_above(ax)
    return _png(fig)


def composition_bars(groups: Sequence[str], sizes: Sequence[int], selected: Sequence[int], what: str) -> bytes:
    """Per group: its size in the pool (grey) and how many of its rows were selected (colour)."""
    x = np.arange(len(groups))
    fig = _figure(width=min(12.0, max(6.0, 0.15 * len(groups))), bottom=_label_margin(groups, len(groups)), top=0.88)
    ax = fig.add_subplot()
    _bars(ax, x, sizes, OTHER, label="pool")
    _bars(ax, x, selected, SELECTED, label="selected")
    _ticks(ax, x, groups)
    ax.set_xlabel(what)
    ax.set_ylabel("rows")
    _legend_above(ax)
    return _png(fig)


def embedding_map(xy: np.ndarray, clusters: np.ndarray | None, selected: np.ndarray) -> bytes:
    """Rows as points on a 2-D projection: coloured by cluster (grey without clusters), the
    selected rows ringed in black."""
    xy = np.asarray(xy, dtype=float)
    selected = np.asarray(selected, dtype=bool)
    fig = _figure(width=7.0, height=5.0, bottom=0.1, top=0.95)
    ax = fig.add_subplot()
    size = 14.0 if len(xy) <= 2000 else 4.0
    if clusters is not None:
        labels = np.nan_to_num(np.asarray(clusters, dtype=float), nan=-1).astype(int)
        ax.scatter(xy[:, 0], xy[:, 1], c=labels % 20, cmap="tab20", vmin=0, vmax=19, s=size, linewidths=0, alpha=0.8)
    else:
        ax.scatter(xy[:, 0], xy[:, 1], color=OTHER, s=size, linewidths=0, alpha=0.6)
    ax.scatter(xy[selected, 0], xy[selected, 1], facecolors="none", edgecolors="black", s=size * 2.5,
               linewidths=0.8, label=f"selected (n={int(selected.sum())})")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=8, loc="best", frameon=True)
    return _png(fig)
