"""SHED reuse: separate seeds for clusters and values, the valuation stage's marker, and a user
error that never deletes what an earlier run (or a finished stage) made."""

import csv
import json

import pytest

import shedkit
from shedkit.data.synthetic import write_demo_data
from shedkit.errors import ShedkitError

SETTINGS = dict(model="tiny-random", embedder="hashed-ngrams", clusters=5, removal_k=2, permutations=2,
                max_length=64, precision="fp32", method="shed-qwcs", budget=12)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    paths = write_demo_data(tmp_path_factory.mktemp("shed-reuse"), n=60, seed=3)
    dev = paths["target_dev"]
    dev.write_text("".join(dev.read_text().splitlines(keepends=True)[:8]))
    return paths


def _method(out):
    return json.loads((out / "manifest.json").read_text())["method"]


def _clusters(out):
    return [r["cluster"] for r in csv.DictReader(open(out / "scores.csv"))]


def test_new_seed_with_pinned_cluster_and_value_seeds_samples_anew_and_fine_tunes_nothing(tmp_path, data):
    common = dict(target=[data["target_dev"]], cache_dir=tmp_path / "cache", **SETTINGS)
    first = shedkit.select(data["pool"], seed=0, out=tmp_path / "s0", **common)
    computed = _method(tmp_path / "s0")["fine_tunes"]["computed"]
    assert computed > 2
    second = shedkit.select(data["pool"], seed=1, cluster_seed=0, value_seed=0, out=tmp_path / "s1", **common)
    m = _method(tmp_path / "s1")
    assert m["fine_tunes"]["computed"] == 0 and m["fine_tunes"]["reused"] == computed
    assert _clusters(tmp_path / "s0") == _clusters(tmp_path / "s1")  # the same clusters...
    assert second.rows != first.rows  # ...sampled anew with --seed 1
    # without the pins, --seed 1 re-clusters and re-values (what the split avoids)
    shedkit.select(data["pool"], seed=1, out=tmp_path / "s1-all", **common)
    assert _method(tmp_path / "s1-all")["fine_tunes"]["computed"] > 0


def test_valuation_stage_has_a_marker_and_is_reused_from_the_run_directory(tmp_path, data):
    out = tmp_path / "run"
    shedkit.select(data["pool"], seed=0, out=out, target=[data["target_dev"]], cache_dir=tmp_path / "c1", **SETTINGS)
    trunc = _method(out)["truncation"]  # per stage, in the manifest
    assert trunc["value_dev"]["rows"] == 8 and trunc["value_fine_tunes"]["rows"] == 5
    assert trunc["value_dev"]["max_length"] == 1024 and trunc["value_fine_tunes"]["max_length"] == 64
    marker = json.loads((out / "work" / "valuation.done.json").read_text())
    assert marker["seed"] == 0 and marker["estimator"] == "shed" and len(marker["players"]) == 5
    # an empty v(S) cache, the same run directory: the finished stage is loaded, nothing recomputed
    shedkit.select(data["pool"], seed=0, out=out, target=[data["target_dev"]], cache_dir=tmp_path / "c2", **SETTINGS)
    m = _method(out)
    assert m["fine_tunes"]["computed"] == 0 and "loaded from" in m["fine_tunes"]["stage"]
    # another value seed is another stage: valued again
    shedkit.select(data["pool"], seed=0, value_seed=5, out=out, target=[data["target_dev"]],
                   cache_dir=tmp_path / "c2", **SETTINGS)
    assert _method(out)["fine_tunes"]["computed"] > 0
    assert json.loads((out / "work" / "valuation.done.json").read_text())["seed"] == 5


def test_a_user_error_keeps_finished_stages_and_earlier_outputs(tmp_path, data):
    kw = dict(target=[data["target_dev"]], cache_dir=tmp_path / "cache", seed=0, **SETTINGS)
    fresh = tmp_path / "fresh"
    with pytest.raises(ShedkitError, match="QWCS"):  # fails after clustering and valuation
        shedkit.select(data["pool"], out=fresh, temperature=-1.0, **kw)
    assert (fresh / "work" / "valuation.done.json").exists() and (fresh / "work" / "clusters").is_dir()
    assert not (fresh / "manifest.json").exists() and not (fresh / "scores.csv").exists()
    # an earlier, finished run in the directory stays whole
    done = tmp_path / "done"
    shedkit.select(data["pool"], out=done, **kw)
    before = {p.relative_to(done): p.read_bytes() for p in done.rglob("*") if p.is_file()}
    with pytest.raises(ShedkitError):
        shedkit.select(data["pool"], out=done, temperature=-1.0, **kw)
    after = {p.relative_to(done): p.read_bytes() for p in done.rglob("*") if p.is_file()}
    assert after == before


def test_device_reaches_the_proxy_fine_tunes(tmp_path, data, capsys):
    """--device pins every fine-tune: asked for CUDA on a machine without it, the jobs refuse
    to run elsewhere (before, the flag stopped at the embedder and fine-tunes ran on the CPU)."""
    import torch

    from shedkit.cli.main import main

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the jobs would simply run there")
    code = main(["select", str(data["pool"]), "--method", "shed-qocs", "--budget", "6", "--model", "tiny-random",
                 "--embedder", "hashed-ngrams", "--clusters", "3", "--permutations", "1", "--precision", "fp32",
                 "--target", str(data["target_dev"]), "--device", "cuda", "--out", str(tmp_path / "o"),
                 "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 2 and "keyed for device=cuda" in err and "Traceback" not in err
    assert not list((tmp_path / "cache").glob("utility/*/*/*.json"))  # nothing cached under the CUDA key
