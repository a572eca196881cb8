"""report.html: valid, self-contained, the right sections for the run's files, user text escaped."""

import json

import numpy as np
import pytest

import shedkit
from shedkit.data.synthetic import write_demo_data
from shedkit.errors import ShedkitError
from shedkit.report.html import build_report, write_report
from shedkit.value.result import ValuationResult

# 4 clusters of 3 rows; clusters 2 and 0 (highest values) hold the selected rows
CLUSTER = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
VALUE = {0: 0.5, 1: -0.2, 2: 0.9, 3: 0.1}
STDERR = {0: 0.05, 1: 0.1, 2: 0.02, 3: 0.2}
SELECTED = [1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0]
PROXIES = [1, 4, 6, 10]


def shed_columns():
    return {
        "cluster": CLUSTER,
        "is_proxy": [int(i in PROXIES) for i in range(12)],
        "value": [VALUE[c] for c in CLUSTER],
        "value_stderr": [STDERR[c] for c in CLUSTER],
        "value_count": [20] * 12,
    }


def test_select_writes_a_valid_report(tmp_path, read_report):
    pool = write_demo_data(tmp_path / "data", n=80)["pool"]
    res = shedkit.select(pool, method="random", budget=8, seed=1, out=tmp_path / "run")
    path = tmp_path / "run" / "report.html"
    assert res.files["report"] == path and path.is_file()
    report = read_report(path)
    assert {"summary", "timings", "settings"} <= set(report.sections)
    summary = report.sections["summary"]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    for fact in ("random selected 8 of 80 rows (10.0%) from pool.jsonl", str(pool), "budget8 → 8 rows"):
        assert fact in summary.text, fact
    # the page opens with what was asked and got, and ends with versions and settings
    ids = [s.id for s in report.parser.sections]
    assert ids[0] == "summary" and ids[-1] == "settings"
    settings = report.sections["settings"]
    for fact in ("numpy", manifest["environment"]["python"]):
        assert fact in settings.text, fact
    if manifest["environment"]["git"]:
        assert manifest["environment"]["git"] in settings.text
    assert "No map: this method uses no embeddings" in report.sections["map"].text
    assert "load" in report.sections["timings"].text


def test_cluster_values_chart_and_composition(tmp_path, make_run, read_report):
    run = make_run(tmp_path / "run", shed_columns(), SELECTED)
    report = read_report(write_report(run))
    values = report.sections["values"]
    assert len(values.imgs) == 1 and "4 clusters" in values.text and "standard error" in values.text
    table = report.sections["by-cluster"].tables[0]
    assert table[0] == ["cluster", "rows", "selected", "selected share", "value", "stderr"]
    got = {int(r[0]): (int(r[1]), int(r[2]), float(r[4]), float(r[5])) for r in table[1:]}
    assert got == {0: (3, 2, 0.5, 0.05), 1: (3, 0, -0.2, 0.1), 2: (3, 3, 0.9, 0.02), 3: (3, 0, 0.1, 0.2)}
    # numeric, non-categorical score columns get a histogram each; cluster/is_proxy do not
    hist = report.sections["scores"]
    assert len(hist.imgs) == 3 and all(n in hist.text for n in ("value:", "value_stderr:", "value_count:"))
    assert "convergence" not in report.sections


def test_histograms_for_method_scores_with_gaps(tmp_path, make_run, read_report):
    cols = {
        "learnability": [0.1 * i for i in range(12)],
        "dsir_logw": ["-inf", *range(10), ""],
        "loss_base": [""] * 12,
        "note": ["a"] * 12,  # not numeric: ignored
        "dq_bin": [i % 3 for i in range(12)],
    }
    report = read_report(write_report(make_run(tmp_path / "run", cols, SELECTED)))
    hist = report.sections["scores"]
    assert len(hist.imgs) == 2 and "2 empty or infinite values left out" in hist.text
    assert "loss_base: no finite values" in hist.text and "note" not in hist.text
    assert "values" not in report.sections
    rows = report.sections["by-dq_bin"].tables[0][1:]
    assert [(r[0], r[1], r[2]) for r in rows] == [("0", "4", "2"), ("1", "4", "2"), ("2", "4", "1")]


def _valuation(n_perm=6, unit=1):
    rng = np.random.default_rng(0)
    marg = rng.normal(size=(n_perm, 4)) + np.array([0.5, -0.2, 0.9, 0.1])
    players = [f"id{i:04d}" for i in PROXIES]
    return ValuationResult(players, marg, unit_size=unit, estimator="shed-removal", stopped_by="max_permutations")


@pytest.mark.parametrize("unit", [1, 2])
def test_convergence_from_valuation_json(tmp_path, make_run, read_report, unit):
    run = make_run(tmp_path / "run", shed_columns(), SELECTED)
    _valuation(unit=unit).save(run / "work" / "valuation.json")
    report = read_report(write_report(run))
    conv = report.sections["convergence"]
    assert len(conv.imgs) == 1 and "each player" in conv.text
    facts = dict(r for r in conv.tables[0][1:])
    assert facts["estimator"] == "shed-removal" and facts["n_permutations"] == "6"


def test_running_means_are_the_mean_of_the_first_samples(tmp_path):
    from shedkit.report.html import _running_values

    res = _valuation(n_perm=6, unit=2)
    res.save(tmp_path / "v.json")
    players, x, running, _ = _running_values(tmp_path / "v.json")
    assert list(x) == [2, 4, 6]
    np.testing.assert_allclose(running[-1], res.values)
    np.testing.assert_allclose(running[0], res.marginals[:2].mean(axis=0))


@pytest.mark.parametrize("content", ["not json", '{"players": ["a"]}', '{"players": ["a"], "marginals": [[1, 2]]}'])
def test_unusable_valuation_json_is_noted_not_fatal(tmp_path, make_run, read_report, content):
    run = make_run(tmp_path / "run", {"cluster": CLUSTER}, SELECTED)
    (run / "work").mkdir()
    (run / "work" / "valuation.json").write_text(content)
    result = build_report(run)
    assert any("valuation.json" in p for p in result.problems)
    (run / "report.html").write_text(result.html, encoding="utf-8")
    report = read_report(run / "report.html")
    assert "convergence" not in report.sections and "by-cluster" in report.sections


def test_user_text_is_escaped(tmp_path, make_run, read_report):
    evil = '<script>alert("x")</script>'
    manifest = {
        "shedkit_command": ["shedkit", "select", evil],
        "config": {"method": "random", evil: evil},
        "method": {"name": evil},
        "pool": {"path": f"/nowhere/{evil}.jsonl"},
    }
    run = make_run(tmp_path / "run", {"value": [1.0] * 12}, SELECTED, manifest)
    report = read_report(write_report(run, by=[evil]))
    assert "<script>" not in report.text and "&lt;script&gt;" in report.text
    assert report.parser.errors == []


@pytest.mark.parametrize("manifest", [{}, {"method": "x", "counts": [1], "pool": "p", "config": 3, "timings": None}])
def test_odd_manifest_and_missing_scores(tmp_path, read_report, manifest):
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps(manifest))
    result = build_report(run)
    assert any("scores.csv" in p for p in result.problems)
    report = read_report(write_report(run))
    assert {"summary", "settings"} <= set(report.sections)


def test_not_a_run_directory(tmp_path):
    with pytest.raises(ShedkitError, match="no such run directory"):
        write_report(tmp_path / "absent")
    with pytest.raises(ShedkitError, match="no manifest.json"):
        write_report(tmp_path)
    (tmp_path / "manifest.json").write_text("[1,")
    with pytest.raises(ShedkitError, match="cannot read the manifest"):
        write_report(tmp_path)
    assert not (tmp_path / "report.html").exists()
