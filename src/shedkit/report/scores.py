"""scores.csv: one line per pool record with its row, id, selection flag and method columns."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from shedkit.data.containers import atomic_write_text, rows_to_csv_text


def _cell(value: Any) -> Any:
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return "" if math.isnan(value) else repr(value)
    if isinstance(value, (np.integer, np.bool_)):
        return int(value)
    if isinstance(value, bool):
        return int(value)
    return "" if value is None else value


def write_scores(
    path: str | Path,
    rows: Sequence[int],
    ids: Sequence[str],
    selected: Sequence[bool],
    columns: Mapping[str, Sequence[Any]],
) -> Path:
    n = len(rows)
    for name, values in columns.items():
        if len(values) != n:
            raise ValueError(f"scores column '{name}' has {len(values)} values for {n} records")
    header = ["row", "id", "selected", *columns]
    body = [
        [int(rows[i]), ids[i], int(bool(selected[i])), *(_cell(columns[c][i]) for c in columns)]
        for i in range(n)
    ]
    return atomic_write_text(path, rows_to_csv_text(header, body))


def read_scores(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
