"""A pool: the records of one input file plus what is needed to write a subset back."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from shedkit.data.containers import RawTable, read_table, subset_filename, write_subset
from shedkit.data.formats import FORMATS, Detected, EmptyResponseError, detect_columns, parse_field_map, resolve_format_name, row_to_turns
from shedkit.data.memory import InMemorySource, is_in_memory, table_from_memory
from shedkit.data.records import Record, make_record
from shedkit.errors import InputError, ShedkitError


@dataclass
class Pool:
    path: Path
    format: str
    field_map: dict[str, str]
    records: list[Record]  # after dedup when asked; Record.index is the row's input position
    table: RawTable = field(repr=False)
    duplicates: list[tuple[int, int]] = field(default_factory=list)  # (row, row it duplicates)
    skipped_empty: list[int] = field(default_factory=list)  # rows left out for an empty response
    dedup: bool = False
    detected: Detected | None = None  # how the format was found (None when --format was given)
    source: InMemorySource | None = field(default=None, repr=False)  # in-memory input, if any

    @property
    def container(self) -> str:
        return self.table.container

    @property
    def num_rows(self) -> int:
        return len(self.table.rows)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def mapping(self) -> str:
        """How the rows were read, in words (for the manifest and report)."""
        if self.detected is not None:
            return self.detected.describe()
        pairs = ", ".join(f"{k}={v}" for k, v in self.field_map.items())
        return f"{self.format} (--format)" + (f" with {pairs}" if pairs else "")

    def subset(self, rows: Sequence[int]):
        """In-memory input: the input rows at positions ``rows``, as the input's own type."""
        if self.source is None:
            raise ValueError("subset() applies to in-memory pools; write a file pool with write_subset")
        return self.source.subset(rows)

    def subset_filename(self) -> str:
        return subset_filename(self.table)

    def write_subset(self, rows: Sequence[int], out_path: str | os.PathLike) -> Path:
        """Write the input rows at positions ``rows`` (input order, original bytes)."""
        return write_subset(self.table, rows, out_path)


def load_pool(
    path: Any,
    format: str | None = None,
    fields: Mapping[str, str] | Sequence[str] | None = None,
    dedup: bool = False,
    skip_empty: bool = False,
    split: str | None = None,
) -> Pool:
    """Read a pool, detect (or take) its format, and normalise every row to a Record.

    ``path`` is a file or saved-dataset path, or an in-memory pool: a list of dicts, a pandas
    DataFrame, a ``datasets.Dataset`` or a ``DatasetDict`` (with ``split=``).
    Raises InputError naming the file, line/row and problem for any bad row. Rows with an
    empty response are an error unless ``skip_empty``, which leaves them out (and lists them).
    """
    source = None
    if is_in_memory(path) or not isinstance(path, (str, os.PathLike)):
        table, source = table_from_memory(path, split)  # unsupported objects get a clear error
    else:
        if split is not None:
            raise ShedkitError(f"split={split!r} applies to an in-memory DatasetDict, not to the file {path}")
        table = read_table(path)
    path = table.path
    if not table.rows:
        raise InputError(path, "the pool is empty (no rows)")
    field_map = parse_field_map(fields)
    detected = None
    if format:
        name = resolve_format_name(format)
    else:
        detected = detect_columns(path, table.rows[0], field_map, table.row_lines[0] or None)
        name, field_map = detected.format, dict(detected.field_map)
    fmt = FORMATS[name]
    records: list[Record] = []
    seen: dict[str, int] = {}
    duplicates: list[tuple[int, int]] = []
    skipped: list[int] = []
    for i, row in enumerate(table.rows):
        line = table.row_lines[i] or None
        where = {"path": path, "line": line, "row": None if line else i}
        try:
            turns = row_to_turns(fmt, row, field_map, where)
        except EmptyResponseError:
            if not skip_empty:
                raise
            skipped.append(i)
            continue
        record = make_record(i, turns, row)
        if record.id in seen:
            duplicates.append((i, seen[record.id]))
            if dedup:
                continue
        else:
            seen[record.id] = i
        records.append(record)
    if not records:
        raise InputError(path, "no usable rows left (all had empty responses)")
    return Pool(path, name, field_map, records, table, duplicates, skipped, dedup, detected, source)
