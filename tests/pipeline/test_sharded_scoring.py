"""The row-score methods score the pool's base losses in shards, on the backend the run names
(``--backend process --workers 2``): the same rows, the same base losses bit for bit and the
same cache entries as the default in-process run; ``--shard-size`` sets the cache parts."""

import csv
import json

import pytest

import shedkit
from shedkit.data.synthetic import write_demo_data
from shedkit.execute.backends import ProcessPoolBackend
from shedkit.pipeline.backends import chosen_backend
from shedkit.pipeline.options import check_options

SETTINGS = dict(model="tiny-random", max_length=64, precision="fp32", progress=False)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_demo_data(tmp_path_factory.mktemp("sharded-data"), n=30, seed=6, dev_rows=4)


def read(out):
    return list(csv.DictReader(open(out / "scores.csv"))), json.loads((out / "manifest.json").read_text())


def loss_parts(cache):
    """{cache key: number of part files} under the loss cache."""
    return {d.name: len(list(d.glob("part-*.jsonl"))) for d in (cache / "losses").iterdir()}


def test_filtered_random_on_a_process_pool_selects_the_default_rows(tmp_path, data, monkeypatch):
    default = shedkit.select(data["pool"], method="filtered-random", budget=6, out=tmp_path / "a",
                             cache_dir=tmp_path / "ca", **SETTINGS)

    from shedkit.models import losses as losses_mod

    def not_here(*args, **kwargs):
        raise AssertionError("a loss shard ran in the driver, not on the backend's workers")

    monkeypatch.setattr(losses_mod, "_run_shard", not_here)  # the spawned workers keep the real one
    sharded = shedkit.select(data["pool"], method="filtered-random", budget=6, out=tmp_path / "b",
                             cache_dir=tmp_path / "cb", backend="process", workers=2, shard_size=8, **SETTINGS)
    assert sharded.rows == default.rows and len(sharded.rows) == 6
    (a, ma), (b, mb) = read(tmp_path / "a"), read(tmp_path / "b")
    for column in ("loss_base", "excluded", "selected"):
        assert [r[column] for r in b] == [r[column] for r in a], column  # the CSV's repr: bit for bit
    # IFD's response-alone pass runs in windows of --shard-size in the driver (8 vs 256 rows
    # here): batched differently, its numbers may differ in the last bits, as the docs say
    for column in ("loss_alone", "ifd", "filter_score"):
        assert [float(r[column] or "nan") for r in b] == pytest.approx(
            [float(r[column] or "nan") for r in a], rel=1e-6, nan_ok=True), column
    assert mb["method"]["base_losses"] == ma["method"]["base_losses"] == {"computed": 30, "cached": 0}
    assert mb["config"]["backend"] == "process" and mb["config"]["shard_size"] == 8
    # the same cache keys; base and response-alone losses each in ceil(30 / 8) parts (the
    # default: one shard of 256)
    parts_a, parts_b = loss_parts(tmp_path / "ca"), loss_parts(tmp_path / "cb")
    assert parts_a.keys() == parts_b.keys() and sorted(parts_a.values()) == [1, 1] and sorted(parts_b.values()) == [4, 4]


def test_backend_options_are_options_of_the_row_filters_and_auto():
    names = ["backend", "workers", "ray_address", "gpus_per_job", "shard_size"]
    for method in ("lowest-loss", "ifd", "filtered-random", "auto", "recommended-v1", "shed-hybrid"):
        check_options(method, names)
    for method in ("lobass", "first-order"):
        check_options(method, ["shard_size"])


def test_chosen_backend_is_none_unless_one_is_named(monkeypatch):
    closed = []
    monkeypatch.setattr(ProcessPoolBackend, "close", lambda self: closed.append(self))
    with chosen_backend({}, {"device": "cpu"}) as none:
        assert none is None
    with chosen_backend({"backend": "process", "workers": 2}, {"device": "cpu"}) as backend:
        assert isinstance(backend, ProcessPoolBackend) and backend.parallelism == 2 and not closed
    assert closed == [backend]  # closed on exit
