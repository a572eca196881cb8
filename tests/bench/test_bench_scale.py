"""bench/bench_scale.py: the pool resampler (unique ids and contents, seeded bytes, labels kept
aligned), the growth-exponent fit, the estimate comparison, and the skip when the suite is absent.
Model-free and fast: a 7-row stand-in suite in tmp_path, nothing of shedkit's CLI is run."""

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_scale.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_scale", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def suite(tmp_path):
    """A stand-in for noisy-mix-v1: 7 Alpaca rows, two of them labelled corrupt."""
    kinds = ["clean", "truncated", "clean", "misaligned", "clean", "clean", "clean"]
    d = tmp_path / "suite"
    d.mkdir()
    (d / "pool.jsonl").write_text("".join(json.dumps({"instruction": f"Question {i}?", "input": "",
                                                      "output": f"Answer {i}."}) + "\n" for i in range(7)))
    (d / "pool_labels.jsonl").write_text("".join(json.dumps({"line": i, "source": "alpaca", "label": k}) + "\n"
                                                 for i, k in enumerate(kinds)))
    return d, kinds


def _jsonl(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_resampled_pool_has_unique_ids_and_contents_and_aligned_labels(bench, suite, tmp_path):
    d, kinds = suite
    pool, labels = bench.synthesise_pool(30, 1, d, tmp_path / "a")
    rows, marks = _jsonl(pool), _jsonl(labels)
    assert len(rows) == len(marks) == 30
    assert len({r["id"] for r in rows}) == 30
    assert len({(r["instruction"], r["output"]) for r in rows}) == 30  # shedkit's record id hashes the content
    for row, mark in zip(rows, marks):
        line, copy = map(int, row["id"].split("#"))
        assert mark["id"] == row["id"] and mark["line"] == line and mark["copy"] == copy
        assert mark["label"] == kinds[line]
        assert row["output"] == f"Answer {line}."  # the response is the real row's
        assert row["instruction"] == f"Question {line}?" + (f" [copy {copy}]" if copy else "")
    counts = Counter(m["line"] for m in marks)  # passes: each row 30 // 7 or 30 // 7 + 1 times
    assert set(counts.values()) <= {4, 5} and len(counts) == 7


def test_resampled_pool_is_seeded(bench, suite, tmp_path):
    d, _ = suite
    a = bench.synthesise_pool(20, 5, d, tmp_path / "a")
    b = bench.synthesise_pool(20, 5, d, tmp_path / "b")
    c = bench.synthesise_pool(20, 6, d, tmp_path / "c")
    assert a[0].read_bytes() == b[0].read_bytes() and a[1].read_bytes() == b[1].read_bytes()
    assert a[0].read_bytes() != c[0].read_bytes()


def test_shedkit_reads_the_resampled_pool_without_duplicates(bench, suite, tmp_path):
    from shedkit.data.pool import load_pool

    d, _ = suite
    pool, _ = bench.synthesise_pool(25, 0, d, tmp_path)
    loaded = load_pool(str(pool))
    assert len(loaded.records) == 25 and not loaded.duplicates
    assert len({r.id for r in loaded.records}) == 25


@pytest.mark.parametrize("power", [1, 2])
def test_growth_exponent(bench, power):
    sizes = [10_000, 30_000, 100_000]
    assert bench.growth_exponent(sizes, [3e-4 * n ** power for n in sizes]) == pytest.approx(power)
    assert bench.growth_exponent(sizes, [None, 2.0 * 30_000 ** power, 2.0 * 100_000 ** power]) == pytest.approx(power)
    assert bench.growth_exponent(sizes, [1.0, None, None]) is None


def test_comparisons_pair_plan_and_manifest(bench):
    stages = {"load_pool": 1.0, "embed": 5.0, "graphcut_bins": 3.0, "write": 1.0}
    estimate = {"seconds": 10.0, "stages": [{"name": k, "seconds": v} for k, v in stages.items()]}
    rows = {r["part"].strip(): r for r in bench.comparisons(
        "dq", estimate, {"load": 1.0, "select": 9.0, "write": 0.5, "report": 0.5}, {"embed": 5.5, "bins": 3.0})}
    assert rows["method"]["estimated_s"] == 8.0 and rows["method"]["within_30pct"]
    assert rows["total"]["measured_s"] == 11.0 and rows["total"]["within_30pct"]
    assert rows["embed"]["measured_over_estimated"] == pytest.approx(1.1)
    assert "draw" not in rows  # no "sample" timing measured


def test_skips_when_the_suite_is_absent(bench, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--out", str(out), "--suite", str(tmp_path / "absent"), "--sizes", "10", "--methods", "random"]
    assert bench.main(argv) == 0
    assert "skipped" in capsys.readouterr().out
    assert not (out / "cells").exists()
