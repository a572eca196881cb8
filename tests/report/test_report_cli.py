"""`shedkit report DIR [--by COLUMN]`: rebuilds the same report; composition by pool columns."""

import json
from collections import Counter

import pytest

import shedkit
from shedkit.cli.main import main

SOURCES = ["math"] * 6 + ["code"] * 3 + ["chat", None, "<script>alert(1)</script>"]


@pytest.fixture
def small_pool(tmp_path):
    """12 Alpaca rows with a `source` column (one row lacks it, one is hostile text)."""
    path = tmp_path / "pool.jsonl"
    lines = []
    for i, source in enumerate(SOURCES):
        row = {"instruction": f"Task {i}", "input": "", "output": f"Answer {i}"}
        if source is not None:
            row["source"] = source
        lines.append(json.dumps(row) + "\n")
    path.write_text("".join(lines), encoding="utf-8")
    return path


def _run(small_pool, tmp_path, budget=5, seed=3):
    return shedkit.select(small_pool, method="random", budget=budget, seed=seed, out=tmp_path / "run")


def _by_table(report, column):
    section = report.sections[f"by-row-{column}"]
    rows = section.tables[0]
    assert rows[0] == [column, "pool rows", "selected", "share of pool", "share of subset"]
    return {r[0]: (int(r[1]), int(r[2])) for r in rows[1:]}


def test_rebuild_gives_the_same_sections(small_pool, tmp_path, capsys, read_report):
    res = _run(small_pool, tmp_path)
    path = res.files["report"]
    before = [(s.id, s.heading, len(s.imgs)) for s in read_report(path).parser.sections]
    path.unlink()
    assert main(["report", str(tmp_path / "run")]) == 0
    assert capsys.readouterr().out.strip() == str(path)
    after = [(s.id, s.heading, len(s.imgs)) for s in read_report(path).parser.sections]
    assert after == before


def test_by_column_counts(small_pool, tmp_path, capsys, read_report):
    res = _run(small_pool, tmp_path)
    assert main(["report", str(tmp_path / "run"), "--by", "source"]) == 0
    report = read_report(tmp_path / "run" / "report.html")
    label = {s: s if s is not None else "(missing)" for s in SOURCES}
    expected = {label[s]: (n, 0) for s, n in Counter(SOURCES).items()}
    for r in res.rows:
        pool_n, picked = expected[label[SOURCES[r]]]
        expected[label[SOURCES[r]]] = (pool_n, picked + 1)
    assert _by_table(report, "source") == expected
    assert sum(v[1] for v in expected.values()) == 5
    assert "<script>alert" not in report.text and "&lt;script&gt;alert(1)" in report.text


def test_by_several_columns_and_an_unknown_one(small_pool, tmp_path, capsys, read_report):
    _run(small_pool, tmp_path, budget=12)
    assert main(["report", str(tmp_path / "run"), "--by", "source", "--by", "input", "--by", "nope"]) == 0
    captured = capsys.readouterr()
    assert "no pool row has a column 'nope'" in captured.err
    report = read_report(tmp_path / "run" / "report.html")
    assert _by_table(report, "input") == {"": (12, 12)}
    assert "instruction, output, source" in report.sections["by-row-nope"].text


def test_pool_gone_is_said_in_the_report(small_pool, tmp_path, capsys, read_report):
    _run(small_pool, tmp_path)
    small_pool.unlink()
    assert main(["report", str(tmp_path / "run"), "--by", "source"]) == 0
    assert "is gone" in capsys.readouterr().err
    section = read_report(tmp_path / "run" / "report.html").sections["by-row-source"]
    assert "is gone" in section.text and not section.tables


def test_changed_pool_is_not_joined(small_pool, tmp_path, capsys, read_report):
    _run(small_pool, tmp_path)
    small_pool.write_text(small_pool.read_text().replace("Answer 3", "Other answer"), encoding="utf-8")
    assert main(["report", str(tmp_path / "run"), "--by", "source"]) == 0
    section = read_report(tmp_path / "run" / "report.html").sections["by-row-source"]
    assert "has changed since the run (row 3 differs)" in section.text and not section.tables


def test_relative_pool_path_found_from_another_directory(small_pool, tmp_path, monkeypatch, read_report):
    monkeypatch.chdir(tmp_path)
    shedkit.select("pool.jsonl", budget=4, out="run")
    monkeypatch.chdir(tmp_path / "run")  # "pool.jsonl" is now one level up
    assert main(["report", ".", "--by", "source"]) == 0
    table = _by_table(read_report(tmp_path / "run" / "report.html"), "source")
    assert table["math"][0] == 6


@pytest.mark.parametrize("setup,message", [
    (lambda d: None, "no such run directory"),
    (lambda d: d.mkdir(), "has no manifest.json"),
])
def test_not_a_run_directory_exit_2(tmp_path, capsys, setup, message):
    target = tmp_path / "nothing"
    setup(target)
    assert main(["report", str(target)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert message in err and str(target) in err and "Traceback" not in err
