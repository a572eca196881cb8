"""Jobs serialise; sequential, process and Ray backends give identical values for one seed."""

import json
import sys
import time

import numpy as np
import pytest

from shedkit.errors import MissingDependencyError, ShedkitError
from shedkit.execute import Job, ProcessPoolBackend, RayBackend, ScoreJobRunner, get_backend
from shedkit.value import (
    CachedUtility,
    MaxPermutations,
    ProxyLikeGame,
    RandomGame,
    ShedRemoval,
    TruncatedMonteCarlo,
    AntitheticMonteCarlo,
)

GAME = RandomGame(7, seed=21)


def estimators():
    return [
        ShedRemoval(removal_k=2, stop=MaxPermutations(6), seed=5),
        TruncatedMonteCarlo(rtol=0.05, stop=MaxPermutations(6), seed=5, batch_size=3),
        AntitheticMonteCarlo(stop=MaxPermutations(6), seed=5),
    ]


def run_all(backend, cache_dir=None):
    """Values of each estimator; through a disk cache when ``cache_dir`` is given."""
    out = []
    for est in estimators():
        util = GAME if cache_dir is None else CachedUtility(GAME, cache_dir / est.name, "s", GAME.players)
        out.append(est.fit(util, backend=backend).result_)
    return out


def assert_identical(a, b):
    for x, y in zip(a, b):
        assert np.array_equal(x.marginals, y.marginals) and np.array_equal(x.values, y.values)
        assert x.n_evaluations == y.n_evaluations


def test_job_round_trips_through_json():
    job = Job.of(["b", "a"], "hash")
    assert job.ids == ("a", "b")
    assert Job.from_dict(json.loads(json.dumps(job.to_dict()))) == job
    assert len(job.key) == 64


def test_runner_checks_the_settings_hash():
    class Score:
        settings_hash = "abc"

        def __call__(self, ids):
            return 1.0

    assert ScoreJobRunner(Score())(Job.of([], "abc")).value == 1.0
    with pytest.raises(ValueError, match="configured differently"):
        ScoreJobRunner(Score())(Job.of([], "xyz"))


def test_get_backend_by_name_and_errors():
    assert get_backend().name == "sequential"
    assert get_backend("process", workers=3).parallelism == 3
    with pytest.raises(ShedkitError, match="did you mean 'process'"):
        get_backend("proces")
    with pytest.raises(ShedkitError, match="does not take"):
        get_backend("process", address="auto")
    with pytest.raises(ShedkitError, match="at least 1"):
        get_backend("process", workers=0)


def test_ray_missing_gives_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(MissingDependencyError, match=r"pip install 'shedkit\[ray\]'"):
        list(RayBackend().run(str, [1]))


def test_process_pool_gives_identical_values(tmp_path):
    sequential = run_all("sequential", tmp_path / "seq")
    with ProcessPoolBackend(workers=2) as pool:
        parallel = run_all(pool, tmp_path / "proc")
        assert_identical(sequential, parallel)
        assert_identical(sequential, run_all(pool))  # the game itself pickled to the workers
    # the process run wrote its own cache, entry for entry the same as the sequential one
    seq_files = {p.name: json.loads(p.read_text())["value"] for p in (tmp_path / "seq").rglob("*.json")}
    proc_files = {p.name: json.loads(p.read_text())["value"] for p in (tmp_path / "proc").rglob("*.json")}
    assert seq_files == proc_files and seq_files


def test_process_pool_error_keeps_finished_jobs(tmp_path):
    util = CachedUtility(FailOnSize5(), tmp_path, "s", GAME.players)
    with ProcessPoolBackend(workers=2) as pool:
        with pytest.raises(RuntimeError, match="boom"):
            ShedRemoval(stop=MaxPermutations(3), seed=0).fit(util, backend=pool)
    sizes = sorted(len(json.loads(p.read_text())["ids"]) for p in tmp_path.rglob("*.json"))
    assert 5 not in sizes and {0, 7} <= set(sizes) and len(sizes) >= 3  # what finished is kept


def test_process_pool_error_still_yields_the_jobs_running_beside_it():
    # The failing job ends at once while the 2-second one runs: that one's result is yielded
    # before the error (the pool runs it to the end anyway), and the pool stays usable.
    results = []
    with ProcessPoolBackend(workers=2) as pool:
        with pytest.raises(RuntimeError, match="boom"):
            for i, value in pool.run(_sleep_or_fail, [2.0, "fail"]):
                results.append((i, value))
        assert results == [(0, 2.0)]
        assert list(pool.run(_sleep_or_fail, [0.0])) == [(0, 0.0)]


def _sleep_or_fail(item):
    if item == "fail":
        raise RuntimeError("boom")
    time.sleep(item)
    return item


class FailOnSize5:
    def __call__(self, ids):
        if len(ids) == 5:
            raise RuntimeError("boom")
        return GAME(ids)


@pytest.mark.slow
def test_ray_gives_identical_values(tmp_path):
    pytest.importorskip("ray", reason="ray is not installed (pip install 'shedkit[ray]')")
    sequential = run_all("sequential")
    with RayBackend(workers=2) as ray_backend:
        assert_identical(sequential, run_all(ray_backend, tmp_path))
        game = ProxyLikeGame(12, seed=0)
        est = lambda: ShedRemoval(removal_k=3, stop=MaxPermutations(4), seed=1)  # noqa: E731
        assert np.array_equal(est().fit(game, backend=ray_backend).result_.values, est().fit(game).result_.values)
