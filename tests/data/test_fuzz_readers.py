"""Bad input at volume: random bytes, random JSON shapes, deep nesting, very long rows and mixed
encodings, in every container, through `shedkit select`. Each run either succeeds with every
output whole, or exits 2 with one message naming the file (and the line, where one row is at
fault) -- never a traceback, never a partial output."""

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shedkit.cli.main import main

FUZZ = settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# valid row text ("\r" alone is not: Python's csv writer leaves it unquoted, its reader rejects it)
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\x00"), max_size=20)
good_row = st.fixed_dictionaries({"instruction": text.filter(str.strip), "input": text, "output": text.filter(str.strip)})
ENCODINGS = ("utf-8", "utf-8-sig", "utf-16", "latin-1", "cp1252")


def run_select(data: bytes, suffix: str, capsys) -> tuple[int, str, Path, Path]:
    """`shedkit select` on ``data`` written to pool<suffix>; (exit code, stderr, pool, out)."""
    work = Path(tempfile.mkdtemp(prefix="fuzz-"))
    pool = work / f"pool{suffix}"
    pool.write_bytes(data)
    out = work / "out"
    capsys.readouterr()
    code = main(["select", str(pool), "--method", "random", "--budget", "1", "--out", str(out)])
    err = capsys.readouterr().err
    return code, err, pool, out


def check(code, err, pool, out, line=None, cleanup=None, must_succeed=False):
    """Success with whole outputs, or exit 2 with one message naming the file (and ``line``)."""
    try:
        assert "Traceback" not in err
        assert code == 0 or not must_succeed, err
        if code == 0:
            manifest = json.loads((out / "manifest.json").read_text())
            assert manifest["counts"]["selected"] == 1
            assert (out / "scores.csv").exists()
            assert not [p for p in out.rglob("*") if p.name.endswith(".tmp") or ".tmp-" in p.name]
        else:
            assert code == 2, err
            assert not out.exists(), f"partial output left: {sorted(p.name for p in out.rglob('*'))}"
            assert str(pool) in err or pool.name in err, err
            if line is not None:
                assert re.search(rf"\bline {line}\b", err), err
    finally:
        shutil.rmtree(cleanup or pool.parent, ignore_errors=True)


@FUZZ
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".jsonl", ".json", ".csv", ".tsv", ".parquet"]))
def test_random_bytes(data, suffix, capsys):
    check(*run_select(data, suffix, capsys))


@FUZZ
@given(values=st.lists(json_values, min_size=1, max_size=6), as_lines=st.booleans())
def test_random_json_shapes(values, as_lines, capsys):
    if as_lines:
        data, suffix = "".join(json.dumps(v) + "\n" for v in values).encode(), ".jsonl"
    else:
        data, suffix = json.dumps(values).encode(), ".json"
    check(*run_select(data, suffix, capsys))


@FUZZ
@given(rows=st.lists(good_row, min_size=1, max_size=4), depth=st.integers(10, 20_000),
       bracket=st.sampled_from(["[", "{\"a\":"]), container=st.sampled_from([".jsonl", ".json"]))
def test_deep_nesting_names_the_line(rows, depth, bracket, container, capsys):
    deep = bracket * depth
    lines = [json.dumps(r) for r in rows]
    bad_line = len(lines) + 1
    if container == ".jsonl":
        data = "\n".join(lines + ['{"instruction": ' + deep]) + "\n"
    else:
        data = "[\n" + ",\n".join(lines + ['{"instruction": ' + deep]) + "\n]\n"
        bad_line += 1
    check(*run_select(data.encode(), container, capsys), line=bad_line)


@FUZZ
@given(rows=st.lists(good_row, min_size=1, max_size=3), size=st.sampled_from([10_000, 200_000]),
       suffix=st.sampled_from([".jsonl", ".json", ".csv"]))
def test_very_long_rows(rows, size, suffix, capsys):
    rows = rows + [{"instruction": "long " * (size // 5), "input": "", "output": "x" * size}]
    if suffix == ".jsonl":
        data = "".join(json.dumps(r) + "\n" for r in rows)
    elif suffix == ".json":
        data = json.dumps(rows)
    else:
        import csv
        import io

        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["instruction", "input", "output"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        data = buf.getvalue()
    check(*run_select(data.encode(), suffix, capsys), must_succeed=True)  # long rows are valid rows


@FUZZ
@given(rows=st.lists(good_row, min_size=2, max_size=4), encodings=st.lists(st.sampled_from(ENCODINGS), min_size=2, max_size=4),
       suffix=st.sampled_from([".jsonl", ".csv"]))
def test_mixed_encodings(rows, encodings, suffix, capsys):
    """Each row in its own encoding (a file glued together from several sources)."""
    parts = [b"instruction,input,output\n"] if suffix == ".csv" else []
    for row, enc in zip(rows, encodings * len(rows)):
        if suffix == ".csv":
            text = ",".join('"' + row[k].replace('"', '""') + '"' for k in ("instruction", "input", "output")) + "\n"
        else:
            text = json.dumps(row, ensure_ascii=False) + "\n"
        try:
            parts.append(text.encode(enc))
        except UnicodeEncodeError:
            parts.append(text.encode("utf-8"))
    check(*run_select(b"".join(parts), suffix, capsys))


@FUZZ
@given(values=st.lists(st.dictionaries(st.sampled_from(["instruction", "input", "output", "x", "messages"]),
                                       json_values, max_size=4), min_size=1, max_size=5))
def test_random_columns_in_parquet_and_saved_datasets(values, capsys, tmp_path_factory):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    try:
        table = pa.Table.from_pylist([{k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in row.items()}
                                      for row in values])
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        return  # pyarrow itself cannot hold these (mixed types, ints past int64): nothing a user could hand us
    work = Path(tempfile.mkdtemp(prefix="fuzz-pq-"))
    pq.write_table(table, work / "pool.parquet")
    check(*run_select((work / "pool.parquet").read_bytes(), ".parquet", capsys))  # in a directory of its own
    datasets = pytest.importorskip("datasets")
    saved = work / "saved"
    datasets.Dataset(table).save_to_disk(str(saved))
    out = work / "out"
    capsys.readouterr()
    code = main(["select", str(saved), "--method", "random", "--budget", "1", "--out", str(out)])
    check(code, capsys.readouterr().err, saved, out, cleanup=work)

