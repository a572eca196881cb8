"""SHED's valuation options through select and the CLI: --dry-run, --estimator cv|msr,
--truncation, --antithetic, and options that the chosen estimator does not use."""

import json

import pytest

import shedkit
from shedkit.data.synthetic import write_demo_data
from shedkit.errors import ShedkitError
from shedkit.value.planning import DryRunFinished

SETTINGS = dict(model="tiny-random", embedder="hashed-ngrams", clusters=5, max_length=64, precision="fp32")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    paths = write_demo_data(tmp_path_factory.mktemp("shed-options"), n=60, seed=2)
    dev = paths["target_dev"]
    dev.write_text("".join(dev.read_text().splitlines(keepends=True)[:12]))
    return paths


def test_dry_run_plans_times_one_fine_tune_and_exits(tmp_path, data, capsys):
    from shedkit.cli.main import main

    code = main(["select", str(data["pool"]), "--method", "shed-qocs", "--model", "tiny-random",
                 "--embedder", "hashed-ngrams", "--clusters", "5", "--target", str(data["target_dev"]),
                 "--max-length", "64", "--removal-k", "2", "--permutations", "3", "--dry-run",
                 "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 0
    # 5 proxies, 2 removed per step: 2 new subsets per permutation, + the full set and ∅
    assert "planned fine-tunes: at most 8" in err and "estimated wall time" in err
    plan = json.loads((tmp_path / "o" / "work" / "dry_run.json").read_text())
    assert plan["planned_evaluations"] == 8 and plan["timing"]["seconds"] > 0
    assert not (tmp_path / "o" / "subset.jsonl").exists()


def test_dry_run_in_python_raises_with_the_plan(tmp_path, data):
    with pytest.raises(DryRunFinished) as info:
        shedkit.select(data["pool"], method="shed-qocs", budget=9, target=[data["target_dev"]],
                       out=tmp_path / "o", cache_dir=tmp_path / "cache", estimator="tmc",
                       max_evals=20, dry_run=True, **SETTINGS)
    assert info.value.plan["planned_evaluations"] == 20 and info.value.plan["estimator"] == "tmc"


@pytest.mark.parametrize("extra", [dict(estimator="cv", max_evals=14), dict(estimator="msr", max_evals=9),
                                   dict(estimator="shed", removal_k=2, truncation=0.1, antithetic=True, permutations=2)])
def test_other_estimators_run_through_select(tmp_path, data, extra):
    shedkit.select(data["pool"], method="shed-qocs", budget=9, target=[data["target_dev"]], seed=0,
                   out=tmp_path / "o", cache_dir=tmp_path / "cache", **SETTINGS, **extra)
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())["method"]
    assert m["estimator"]["estimator"] == extra["estimator"]
    if "max_evals" in extra:
        assert m["estimator"]["n_evaluations"] <= extra["max_evals"]
    else:
        assert m["estimator"]["params"]["truncation_rtol"] == 0.1 and m["estimator"]["params"]["antithetic"]


def test_options_of_another_estimator_are_errors(tmp_path, data):
    for extra, match in [(dict(estimator="mc", removal_k=2), "removal-k"),
                         (dict(estimator="msr", truncation=0.1), "permutation estimators"),
                         (dict(estimator="shed", surrogate="x.json"), "cv")]:
        with pytest.raises(ShedkitError, match=match):
            shedkit.select(data["pool"], method="shed-qocs", budget=9, target=[data["target_dev"]],
                           out=tmp_path / "o", cache_dir=tmp_path / "cache", **SETTINGS, **extra)


def test_an_evaluation_cap_below_one_permutation_is_an_error_before_any_fine_tune(tmp_path, data):
    # 5 proxies removed one at a time: ∅, the full set and 4 subsets make one permutation (6).
    with pytest.raises(ShedkitError, match="allows 4 fine-tunes.*takes 6.*--max-evals to at least 6"):
        shedkit.select(data["pool"], method="shed-qocs", budget=9, target=[data["target_dev"]], seed=0,
                       out=tmp_path / "o", cache_dir=tmp_path / "cache", max_evals=4, **SETTINGS)
    assert not list((tmp_path / "cache").glob("utility/*/*/*.json"))  # nothing was fine-tuned


def test_a_valuation_with_no_finished_sample_says_so():
    from types import SimpleNamespace

    import numpy as np

    from shedkit.pipeline.shed_values import check_some_value

    stopped = SimpleNamespace(values=np.full(3, np.nan), stopped_by="max_time=60s", n_computed=4)
    with pytest.raises(ShedkitError, match=r"stopped \(max_time=60s\) before any sample finished.*4 new fine-tunes"):
        check_some_value(stopped)
    check_some_value(SimpleNamespace(values=np.array([np.nan, 0.2]), stopped_by="", n_computed=1))
