"""Read and write the containers a pool can come in, keeping each row's original bytes.

JSONL and JSON arrays remember every row's exact source text, CSV every row's exact lines, so
a subset is written with its rows byte-for-byte as they came in. Parquet and saved Hugging
Face datasets keep their schema (Arrow ``take``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from shedkit.errors import InputError, require
from shedkit.util.atomic import (  # noqa: F401 - re-exported: older imports read them here
    atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text, publish_mode, strict_json,
)

CONTAINERS = ("jsonl", "json", "parquet", "csv", "hf")
TOO_DEEP = "JSON nested too deeply to read (thousands of levels of arrays or objects)"
CSV_FIELD_LIMIT = 2**31 - 1


@dataclass
class RawTable:
    """Rows as read, plus what is needed to write a subset back in the same container."""

    path: Path
    container: str
    rows: list[dict[str, Any]]
    row_lines: list[int]  # 1-based source line of each row (0 where lines don't apply)
    raw: list[str] = field(default_factory=list, repr=False)  # jsonl/json/csv: each row's text
    head: str = ""  # json: text before the first row; csv: the header line(s)
    sep: str = ""  # json: text between rows
    tail: str = ""  # json: text after the last row
    arrow: Any = None  # parquet / hf: the Arrow table or Dataset

    @property
    def extension(self) -> str:
        return {"hf": ""}.get(self.container, "." + self.container)


def detect_container(path: Path) -> str:
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "state.json").exists():
            return "hf"
        raise InputError(path, "is a directory but not a saved Hugging Face dataset (no dataset_info.json)")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".json":
        return "json"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".csv", ".tsv"):
        return "csv"
    raise InputError(path, f"unknown file type '{suffix or path.name}'; expected .jsonl, .json, .parquet, .csv or a saved dataset directory")


def read_table(path: str | os.PathLike) -> RawTable:
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or directory")
    container = detect_container(path)
    if container == "parquet":
        return _read_parquet(path)
    if container == "hf":
        return _read_hf(path)
    text = _decode(path)
    if container == "csv":
        return _read_csv(path, text)
    if container == "json" and _looks_like_jsonl(text):
        table = _read_jsonl(path, text)
        table.container = "json-lines"  # a .json file holding JSON Lines: written back the same way
        return table
    return _read_json(path, text) if container == "json" else _read_jsonl(path, text)


def _decode(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(path, f"undecodable bytes (not UTF-8) at byte {exc.start}", line=line) from None


def _looks_like_jsonl(text: str) -> bool:
    stripped = text.lstrip()
    if not stripped.startswith("{"):
        return False
    first = stripped.split("\n", 1)[0]
    try:
        json.loads(first)
        return True
    except (json.JSONDecodeError, RecursionError):
        return False


def _as_row(path: Path, value: Any, line: int | None = None, row: int | None = None) -> dict:
    if not isinstance(value, dict):
        raise InputError(path, f"expected a JSON object, got {type(value).__name__}", line=line, row=row)
    return value


def _read_jsonl(path: Path, text: str) -> RawTable:
    rows, lines, raw = [], [], []
    for lineno, line in enumerate(_split_lines(text), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(path, f"invalid JSON: {exc.msg} (column {exc.colno})", line=lineno) from None
        except RecursionError:
            raise InputError(path, TOO_DEEP, line=lineno) from None
        rows.append(_as_row(path, value, line=lineno))
        lines.append(lineno)
        raw.append(line if line.endswith("\n") else line + "\n")
    return RawTable(path, "jsonl", rows, lines, raw=raw)


def _read_json(path: Path, text: str) -> RawTable:
    """Parse a top-level array element by element so each element's source text is kept."""
    decoder = json.JSONDecoder()
    pos = _skip_ws(text, 0)
    if pos >= len(text) or text[pos] != "[":
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(path, f"invalid JSON: {exc.msg}", line=exc.lineno) from None
        except RecursionError:
            raise InputError(path, TOO_DEEP, line=1) from None
        raise InputError(path, "expected a JSON array of objects (or JSON Lines)", line=1)
    rows, lines, raw = [], [], []
    head_end = pos + 1
    pos = _skip_ws(text, head_end)
    seps: list[str] = []
    tail_start = pos
    if pos < len(text) and text[pos] == "]":
        tail_start = head_end
    else:
        while True:
            start = pos
            lineno = text.count("\n", 0, start) + 1
            try:
                value, end = decoder.raw_decode(text, start)
            except json.JSONDecodeError as exc:
                where = "" if exc.lineno == lineno else f" at line {exc.lineno}, column {exc.colno}"
                raise InputError(path, f"invalid JSON in the array element starting here: {exc.msg}{where}",
                                 line=lineno) from None
            except RecursionError:
                raise InputError(path, TOO_DEEP, line=lineno) from None
            rows.append(_as_row(path, value, line=lineno))
            lines.append(lineno)
            raw.append(text[start:end])
            pos = _skip_ws(text, end)
            if pos < len(text) and text[pos] == ",":
                nxt = _skip_ws(text, pos + 1)
                seps.append(text[end:nxt])
                pos = nxt
                continue
            if pos < len(text) and text[pos] == "]":
                tail_start = end
                break
            line = text.count("\n", 0, pos) + 1
            raise InputError(path, "invalid JSON: expected ',' or ']' after an array element", line=line)
    head = text[:head_end] + (text[head_end:_skip_ws(text, head_end)] if rows else "")
    sep = seps[0] if seps else ",\n"
    tail = text[tail_start:]
    if tail.strip()[1:].strip():
        raise InputError(path, "invalid JSON: extra data after the top-level array")
    return RawTable(path, "json", rows, lines, raw=raw, head=head, sep=sep, tail=tail)


def _split_lines(text: str) -> list[str]:
    """Split on '\n' only (str.splitlines also splits on U+0085, U+2028... inside JSON strings)."""
    lines = text.split("\n")
    out = [line + "\n" for line in lines[:-1]]
    return out + [lines[-1]] if lines[-1] else out


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _read_csv(path: Path, text: str) -> RawTable:
    # a long response is a valid field: lift csv's 128 KiB field limit while reading
    previous = csv.field_size_limit(CSV_FIELD_LIMIT)
    try:
        return _read_csv_rows(path, text)
    finally:
        csv.field_size_limit(previous)


def _read_csv_rows(path: Path, text: str) -> RawTable:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    lines = _split_lines(text)
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(path, "empty CSV file (no header)", line=1) from None
    except csv.Error as exc:
        raise InputError(path, f"malformed CSV header: {exc}", line=reader.line_num or 1) from None
    head = "".join(lines[: reader.line_num])
    if len(set(header)) != len(header):
        raise InputError(path, f"duplicate column names in the header: {header}", line=1)
    rows, row_lines, raw = [], [], []
    consumed = reader.line_num
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise InputError(path, f"malformed CSV: {exc}", line=reader.line_num) from None
        start, consumed = consumed, reader.line_num
        if not values or all(v == "" for v in values) and len(values) <= 1:
            continue
        if len(values) != len(header):
            raise InputError(path, f"expected {len(header)} fields, found {len(values)}", line=start + 1)
        rows.append(dict(zip(header, values)))
        row_lines.append(start + 1)
        chunk = "".join(lines[start:consumed])
        raw.append(chunk if chunk.endswith(("\n", "\r")) else chunk + "\n")
    return RawTable(path, "csv", rows, row_lines, raw=raw, head=head)


def _read_parquet(path: Path) -> RawTable:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise InputError(path, f"cannot read Parquet: {exc}") from None
    return RawTable(path, "parquet", table.to_pylist(), [0] * table.num_rows, arrow=table)


def _read_hf(path: Path) -> RawTable:
    datasets = require("datasets", "models", "reading a saved Hugging Face dataset")
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:
        raise InputError(path, f"cannot read the saved dataset: {exc}") from None
    if isinstance(ds, datasets.DatasetDict):
        raise InputError(path, f"is a DatasetDict with splits {list(ds)}; point at one split's directory")
    return RawTable(path, "hf", ds.to_list(), [0] * len(ds), arrow=ds)


# --------------------------------------------------------------------------------------------
# writing


def subset_filename(table: RawTable) -> str:
    return "subset" + table.extension if table.container != "json-lines" else "subset.json"


def write_subset(table: RawTable, positions: Sequence[int], out_path: str | os.PathLike) -> Path:
    """Write rows ``positions`` (indices into table.rows, written in input order) atomically."""
    out_path = Path(out_path)
    order = sorted(set(int(p) for p in positions))
    if table.container == "hf":
        return _write_hf(table, order, out_path)
    if table.container == "parquet":
        import pyarrow.parquet as pq

        with atomic_path(out_path) as tmp:
            pq.write_table(table.arrow.take(order), str(tmp))
        return out_path
    if table.container in ("jsonl", "json-lines"):
        text = "".join(table.raw[i] for i in order)
    elif table.container == "json":
        body = table.sep.join(table.raw[i] for i in order)
        text = table.head + body + table.tail if order else "[]\n"
    elif table.container == "csv":
        text = table.head + "".join(table.raw[i] for i in order)
    else:  # pragma: no cover
        raise ValueError(table.container)
    atomic_write_bytes(out_path, text.encode("utf-8"))
    return out_path


def _write_hf(table: RawTable, order: list[int], out_path: Path) -> Path:
    out_path.parent.mkdir(parents=True, exist_ok=True)  # as atomic_path does for the file containers
    tmp = Path(tempfile.mkdtemp(prefix=out_path.name + ".tmp-", dir=out_path.parent))
    try:
        table.arrow.select(order).save_to_disk(str(tmp / "ds"))
        publish_mode(tmp / "ds", tree=True)
        if out_path.exists():
            shutil.rmtree(out_path)
        os.replace(tmp / "ds", out_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_path


def rows_to_csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()
