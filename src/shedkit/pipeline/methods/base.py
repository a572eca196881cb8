"""The contract every selection method implements (one module per method in this package).

A method module defines ``run(ctx: MethodContext) -> MethodResult``. The pipeline resolves the
budget, loads the pool, creates the run directory, calls ``run`` and writes the subset,
``scores.csv``, ``manifest.json`` and the report from the result. Methods never write the
subset themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from shedkit.data.records import Record


@dataclass
class MethodContext:
    records: Sequence[Record]  # the pool, in input order (after --dedup if asked)
    budget: int  # exact number of rows to select, 1 <= budget <= len(records)
    seed: int
    options: Mapping[str, Any]  # merged config (defaults < YAML < flags); see option()
    run_dir: Path  # the --out directory; methods may keep artifacts under run_dir / "work"
    cache_dir: Path  # shared cache across runs (embeddings, fine-tunes, losses)
    method: str = ""  # the --method name this run was asked for (one module may serve several)

    def option(self, name: str, default: Any = None) -> Any:
        value = self.options.get(name)
        return default if value is None else value


@dataclass
class MethodResult:
    selected: np.ndarray  # positions into ctx.records, exactly ctx.budget distinct ints
    columns: dict[str, Sequence[Any]] = field(default_factory=dict)  # per-row scores.csv columns
    info: dict[str, Any] = field(default_factory=dict)  # goes into manifest.json["method"]
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
