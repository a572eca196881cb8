"""Pools held in memory: a list of dicts, a pandas DataFrame, a ``datasets.Dataset`` or one
split of a ``DatasetDict``. The subset comes back as the same kind of object, rows unchanged.

No pandas/datasets import at module level: each is imported only when such an object is given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from shedkit.data.containers import RawTable
from shedkit.errors import ShedkitError

KINDS = ("list", "pandas", "datasets", "datasetdict")


@dataclass
class InMemorySource:
    """Where an in-memory pool came from, to hand back a subset of the same type."""

    kind: str  # one of KINDS
    data: Any = None
    split: str | None = None  # DatasetDict only

    @property
    def label(self) -> Path:
        """What error messages and the manifest call the pool."""
        name = {"list": "list of dicts", "pandas": "pandas DataFrame", "datasets": "datasets.Dataset",
                "datasetdict": f"DatasetDict[{self.split!r}]"}[self.kind]
        return Path(f"<{name}>")

    def subset(self, rows: Sequence[int]) -> Any:
        """The input rows at positions ``rows`` (input order), as the input's own type.

        list -> a list of the same dict objects; DataFrame -> ``df.iloc[rows]`` (index kept);
        Dataset -> ``ds.select(rows)``; DatasetDict -> a DatasetDict whose ``split`` is the
        subset and whose other splits are the input's, unchanged.
        """
        order = sorted(int(r) for r in rows)
        if self.kind == "list":
            return [self.data[i] for i in order]
        if self.kind == "pandas":
            return self.data.iloc[order]
        if self.kind == "datasets":
            return self.data.select(order)
        from datasets import DatasetDict

        return DatasetDict({name: (ds.select(order) if name == self.split else ds) for name, ds in self.data.items()})


def is_in_memory(data: Any) -> bool:
    return _kind(data) is not None


def _kind(data: Any) -> str | None:
    if isinstance(data, list):
        return "list"
    module = type(data).__module__
    name = type(data).__name__
    if module.startswith("pandas") and name == "DataFrame":
        return "pandas"
    if module.startswith("datasets") and name == "Dataset":
        return "datasets"
    if module.startswith("datasets") and name == "DatasetDict":
        return "datasetdict"
    return None


def table_from_memory(data: Any, split: str | None = None) -> tuple[RawTable, InMemorySource]:
    """Rows of an in-memory pool as a RawTable (JSON Lines text for lists and DataFrames, the
    Dataset itself for datasets, so a subset can also be written to disk), plus its source."""
    kind = _kind(data)
    if kind is None:
        raise ShedkitError(
            f"cannot select from a {type(data).__name__}: pass a file path, a list of dicts, a pandas "
            "DataFrame, a datasets.Dataset or a DatasetDict with split="
        )
    if kind == "datasetdict":
        if split is None:
            if len(data) != 1:
                raise ShedkitError(f"this DatasetDict has splits {sorted(data)}; say which to select from with split=")
            split = next(iter(data))
        if split not in data:
            raise ShedkitError(f"split {split!r} is not in the DatasetDict (it has {sorted(data)})")
    elif split is not None:
        raise ShedkitError(f"split= applies to a DatasetDict, not to a {type(data).__name__}")
    source = InMemorySource(kind, data, split)
    if kind in ("datasets", "datasetdict"):
        ds = data[split] if kind == "datasetdict" else data
        rows = ds.to_list()
        return RawTable(source.label, "hf", rows, [0] * len(rows), arrow=ds), source
    if kind == "pandas":
        rows = [_plain(r) for r in data.to_dict(orient="records")]
    else:
        rows = list(data)
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise ShedkitError(f"{source.label}, row {i}: expected a dict, got {type(row).__name__}")
    raw = [json.dumps(r, ensure_ascii=False, default=_json_default) + "\n" for r in rows]
    return RawTable(source.label, "jsonl", rows, [0] * len(rows), raw=raw), source


def _plain(value: Any) -> Any:
    """numpy scalars/arrays (as pandas hands them out) -> Python values, recursively."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist") and type(value).__module__ == "numpy":
        return _plain(value.tolist())
    try:
        import math

        if isinstance(value, float) and math.isnan(value):
            return None
    except TypeError:  # pragma: no cover
        pass
    return value


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
