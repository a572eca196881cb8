"""A benchmark suite directory: a pool, its corruption labels, dev targets and test targets.

Layout (``shared/bench/noisy-mix-v1`` is the standing one)::

    pool.jsonl              the pool to select from (any pool format shedkit reads)
    pool_labels.jsonl       per pool line {line, source, label}; label 'clean' or a corruption
                            kind. Used only to score a selection, never as a method's input.
    target_<name>_dev.*     dev targets a selection method may use
    target_<name>_test.*    test targets for the final evaluation only

Dev/test files are instruction rows (scored by loss) or ``{query, choices, gold}`` rows
(scored by acc/acc_norm); the kind is read from each file's first row.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from shedkit.errors import ShedkitError

_TARGET = re.compile(r"^target_(?P<name>.+)_(?P<split>dev|test)\.(jsonl|json|csv|parquet)$")
MC_FIELDS = ("query", "choices", "gold")


@dataclass
class Suite:
    root: Path
    pool: Path
    labels: Path | None
    dev: dict[str, Path] = field(default_factory=dict)  # name -> file
    test: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def discover(cls, root: str | os.PathLike) -> "Suite":
        root = Path(root)
        if not root.is_dir():
            raise ShedkitError(f"--suite {root}: not a directory")
        pools = sorted(p for p in root.iterdir() if p.stem == "pool" and p.is_file())
        if not pools:
            raise ShedkitError(f"--suite {root}: no pool file (pool.jsonl, pool.json, pool.csv or pool.parquet)")
        labels = root / "pool_labels.jsonl"
        suite = cls(root, pools[0], labels if labels.exists() else None)
        for p in sorted(root.iterdir()):
            m = _TARGET.match(p.name)
            if m:
                getattr(suite, m["split"])[m["name"]] = p
        if not suite.test:
            raise ShedkitError(f"--suite {root}: no test targets (target_<name>_test.jsonl)")
        return suite

    def is_mc(self, path: Path) -> bool:
        from shedkit.data.containers import read_table

        rows = read_table(path).rows
        return bool(rows) and all(k in rows[0] for k in MC_FIELDS)

    def loss_dev(self) -> dict[str, Path]:
        """Dev targets made of instruction rows (DSIR's and SHED's loss targets)."""
        return {k: p for k, p in self.dev.items() if not self.is_mc(p)}

    def meta(self) -> dict:
        path = self.root / "meta.json"
        return json.loads(path.read_text()) if path.exists() else {}


def read_labels(path: Path | None) -> list[dict]:
    """pool_labels rows in line order ([] without a labels file)."""
    if path is None:
        return []
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    if any(r.get("line", i) != i for i, r in enumerate(rows)):
        rows = sorted(rows, key=lambda r: r["line"])
    return rows


def composition(labels_path: Path | None, labels: list[dict], rows: list[int]) -> dict[str, dict[str, float]]:
    """Share of the selected input rows per label (``corrupted`` = 1 - clean; the data layer's
    ``corrupted_fraction``) and per source. Empty without a labels file."""
    from shedkit.data.synthetic import corrupted_fraction

    if labels_path is None or not labels:
        return {}
    out = {"labels": corrupted_fraction(labels_path, rows), "sources": {}}
    if all("source" in r for r in labels):
        names = sorted({str(r["source"]) for r in labels})
        picked = [str(labels[r]["source"]) for r in rows]
        out["sources"] = {s: picked.count(s) / max(1, len(rows)) for s in names}
    return out
