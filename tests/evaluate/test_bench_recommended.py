"""Issue 22's bench pieces: the mix-random reference row (random rows with another row's source
mix), the suite's derived mixed target, and the claims about the recommended row ``auto``."""

import json
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

from shedkit.cli.main import main
from shedkit.data.synthetic import make_pool
from shedkit.errors import ShedkitError


def test_mix_random_positions_known_answer():
    from shedkit.evaluate.bench_rows import mix_random_positions

    sources = ["a", "b", "a", "c", "b", "a", "b", "a"]
    labels = [{"line": i, "source": s, "label": "clean"} for i, s in enumerate(sources)]
    records = [SimpleNamespace(index=i) for i in range(8) if i != 5]  # line 5 left out of the pool
    of_lines = [0, 2, 4]  # two 'a', one 'b'
    for seed in range(6):
        pos = mix_random_positions(records, labels, of_lines, seed)
        assert len(pos) == 3 and pos == sorted(set(pos))
        assert Counter(labels[records[p].index]["source"] for p in pos) == {"a": 2, "b": 1}
    draws = {tuple(mix_random_positions(records, labels, of_lines, s)) for s in range(6)}
    assert len(draws) > 1  # seeded, not fixed
    assert mix_random_positions(records, labels, of_lines, 3) == mix_random_positions(records, labels, of_lines, 3)
    with pytest.raises(ShedkitError, match="only 1 in the pool"):
        mix_random_positions(records, labels, [3, 3], 0)  # two 'c' asked, one exists
    with pytest.raises(ShedkitError, match="source"):
        mix_random_positions(records, [{"label": "clean"}] * 8, of_lines, 0)


def test_with_mixed_is_the_equal_weight_mean():
    from shedkit.evaluate.bench import with_mixed

    evals = {"a_test": {"loss": 1.0, "n_rows": 10}, "b_test": {"loss": 2.0, "n_rows": 300}, "c_test": {"acc": 0.5}}
    out = with_mixed(evals, ["a_test", "b_test"])
    assert out["mixed_test"]["loss"] == pytest.approx(1.5) and "mixed_test" not in evals  # not mutated
    assert with_mixed(evals, ["a_test", "c_test"]) == evals  # a part without a loss: nothing derived


@pytest.fixture
def two_source_suite(tmp_path, write_jsonl):
    d = tmp_path / "suite"
    d.mkdir()
    rows, labels = make_pool(60, corrupt_fraction=0.25, seed=0)
    for i, lab in enumerate(labels):  # two sources, unevenly mixed
        lab["source"] = "alpaca" if i % 3 else "other"
    write_jsonl(d / "pool.jsonl", rows)
    write_jsonl(d / "pool_labels.jsonl", labels)
    dev, _ = make_pool(8, corrupt_fraction=0.0, seed=1)
    write_jsonl(d / "target_alpaca_dev.jsonl", dev)
    write_jsonl(d / "target_alpaca_test.jsonl", make_pool(6, corrupt_fraction=0.0, seed=2)[0])
    write_jsonl(d / "target_other_test.jsonl", make_pool(6, corrupt_fraction=0.0, seed=5)[0])
    (d / "meta.json").write_text(json.dumps({"name": "tiny-v2", "mixed_test": ["alpaca", "other"]}))
    return d


def test_bench_mix_random_copies_the_source_mix_of_auto(tmp_path, two_source_suite):
    out = tmp_path / "bench"
    args = ["bench", "--suite", str(two_source_suite), "--out", str(out), "--methods", "random,auto,mix-random",
            "--seeds", "2", "--quick", "--model", "tiny-random", "--limit-test", "3", "--budget", "12", "--no-progress"]
    assert main(args) == 0
    doc = json.loads((out / "results.json").read_text())
    labels = [json.loads(line) for line in (two_source_suite / "pool_labels.jsonl").read_text().splitlines()]
    rows = {}
    for run in doc["runs"]:
        sel = json.loads((out / run["selection"] / "bench_selection.json").read_text())
        rows[run["row"], run["seed"]] = sel["rows"]
    for seed in (0, 1):
        auto, mix = rows["auto", seed], rows["mix-random", seed]
        assert Counter(labels[r]["source"] for r in mix) == Counter(labels[r]["source"] for r in auto)
        assert len(mix) == 12
    assert rows["mix-random", 0] != rows["mix-random", 1]
    assert doc["summary"]["mix-random"]["reference"] and not doc["summary"]["auto"]["reference"]
    # the derived mixed target: per run, the equal-weight mean of the parts
    assert doc["tasks"]["mixed_test"]["derived_from"] == ["alpaca_test", "other_test"]
    for run in doc["runs"]:
        e = run["eval"]
        assert e["mixed_test"]["loss"] == pytest.approx((e["alpaca_test"]["loss"] + e["other_test"]["loss"]) / 2)
    assert doc["base"]["mixed_test"]["loss"] == pytest.approx(
        (doc["base"]["alpaca_test"]["loss"] + doc["base"]["other_test"]["loss"]) / 2)
    assert "mixed_test" not in next(iter(doc["cells"].values()))["eval"]  # derived, never cached as a task
    md = (out / "results.md").read_text()
    assert "On the mixed_test loss" in md and "the recommended method (auto = recommended-v1) beats random" in md
    # the selection mix-random copies is part of its key: another 'of' row is another cell
    assert main(args[:6] + ["mix-random"] + args[7:] + ["--option", "mix-random.of=random"]) == 0
    doc2 = json.loads((out / "results.json").read_text())
    assert doc2["stages"]["computed"]["select"] == 2  # mix-random's 2 seeds anew; random's selections cached
    assert main(args[:6] + ["mix-random"] + args[7:] + ["--option", "mix-random.of=mix-random"]) == 2


def _doc(rows, tasks):
    """A results document: rows = {row: {task: [per-seed values]}}; tasks = {task: kind}."""
    summary = {}
    for row, per_task in rows.items():
        t = {}
        for task, vals in per_task.items():
            metric = "loss" if tasks[task] == "records" else "acc"
            sd = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
            t[task] = {metric: {"mean": float(np.mean(vals)), "sd": sd, "n": len(vals), "values": list(vals)}}
        summary[row] = {"runs": 3, "deterministic": False, "reference": row.endswith("-random") and row != "filtered-random",
                        "tasks": t}
    info = {k: {"kind": v, "rows": 10} for k, v in tasks.items()}
    info["mixed_test"]["derived_from"] = ["a_test", "b_test"]
    return {"summary": summary, "tasks": info, "settings": {"limit_test": None}, "cells": {}, "pool_key": "p",
            "eval_keys": {}}


def test_recommended_claims_known_answers():
    from shedkit.evaluate.bench_claims import claims, primary_task

    tasks = {"mixed_test": "records", "a_test": "records", "b_test": "records", "arc_test": "mc"}
    fr = {"mixed_test": [1.40, 1.41, 1.39], "a_test": [1.0, 1.01, 0.99], "b_test": [1.8, 1.81, 1.79],
          "arc_test": [0.50, 0.51, 0.49]}
    doc = _doc({
        "random": {"mixed_test": [1.50, 1.51, 1.49], "a_test": [1.0, 1.01, 0.99], "b_test": [2.0, 2.01, 1.99],
                   "arc_test": [0.60, 0.61, 0.59]},
        "auto": fr, "filtered-random": fr,  # auto = filtered-random: the same selections, the same values
        "mix-random": {"mixed_test": [1.46, 1.47, 1.45], "a_test": [1.0, 1.0, 1.0], "b_test": [1.9, 1.9, 1.9],
                       "arc_test": [0.6, 0.6, 0.6]},
    }, tasks)
    assert primary_task(doc) == "mixed_test" and primary_task({"tasks": {"alpaca_test": {}}}) == "alpaca_test"
    got = {c[0]: c for c in claims(doc)}
    beat = got["the recommended method (auto = recommended-v1) beats random on mixed_test by > 2 sd"]
    assert beat[3] == "yes" and "Δ = -0.1000" in beat[2]
    assert got["the recommended method beats filtered-random on mixed_test by > 2 sd"][3] == "same row"
    worse = got["the recommended method is worse than random by > 2 sd on no single target"]
    assert worse[3] == "no" and "arc_test acc" in worse[2] and "a_test" not in worse[2]  # 0.50 vs 0.60 acc
    share = got["share of the recommended method's gain over random that its source mix explains (mix-random)"]
    assert share[3] == "40%"  # (1.50 - 1.46) / (1.50 - 1.40)
    # a tie with random leaves no gain to split; a row that differs from filtered-random is compared
    doc["summary"]["auto"] = doc["summary"]["random"]
    got = {c[0]: c for c in claims(doc)}
    assert got["share of the recommended method's gain over random that its source mix explains (mix-random)"][3] == "no gain to explain"
    assert got["the recommended method beats filtered-random on mixed_test by > 2 sd"][3] == "no"
    assert got["the recommended method is worse than random by > 2 sd on no single target"][3] == "yes"
    # without an auto row the table keeps v1's claims only
    del doc["summary"]["auto"]
    assert not any("recommended" in c[0] for c in claims(doc))
