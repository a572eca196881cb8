"""Shard planning for sharded loss scoring and embedding: windows of consecutive positions, so
a rerun rebuilds exactly the shards an interrupted run had not finished."""

import time

import pytest

from shedkit.errors import ShedkitError
from shedkit.execute import SequentialBackend, get_backend
from shedkit.execute.shards import SHARD_DELAY_ENV, check_shard_size, opened_backend, plan_shards, run_shards, runs_inline, shard_delay


def test_shards_are_windows_of_consecutive_positions():
    assert plan_shards(range(10), 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert plan_shards([9, 1, 2, 5], 4) == [[1, 2], [5], [9]]  # any order in, windows out
    assert plan_shards([], 4) == []


def test_a_shard_depends_only_on_its_window():
    """Whatever other shards are done, the rows left of a window form the same shard."""
    full = plan_shards(range(23), 5)
    for done in ([0], [1, 3], [0, 2, 4], [4]):
        left = [p for k, shard in enumerate(full) if k not in done for p in shard]
        assert plan_shards(left, 5) == [s for k, s in enumerate(full) if k not in done]


@pytest.mark.parametrize("bad", [0, -1, 1.5, "4", True])
def test_shard_size_must_be_a_positive_integer(bad):
    with pytest.raises(ShedkitError, match="shard_size"):
        check_shard_size(bad, 10)
    assert check_shard_size(None, 10) == 10 and check_shard_size(3, 10) == 3


def test_delay_knob(monkeypatch):
    monkeypatch.delenv(SHARD_DELAY_ENV, raising=False)
    start = time.perf_counter()
    shard_delay()
    monkeypatch.setenv(SHARD_DELAY_ENV, "0.05")
    shard_delay()
    assert 0.05 <= time.perf_counter() - start < 1
    monkeypatch.setenv(SHARD_DELAY_ENV, "soon")
    with pytest.raises(ShedkitError, match=SHARD_DELAY_ENV):
        shard_delay()


def test_inline_backends_run_the_local_function():
    remote = lambda job: ("remote", job)  # noqa: E731
    local = lambda job: ("local", job)  # noqa: E731
    assert runs_inline(None) and runs_inline(SequentialBackend())
    assert list(run_shards(None, [1, 2], remote, local)) == [(0, ("local", 1)), (1, ("local", 2))]
    assert list(run_shards(SequentialBackend(), [3], remote, local)) == [(0, ("local", 3))]
    with opened_backend("sequential") as be:
        assert be.name == "sequential"
    pool = get_backend("process", workers=1)
    with opened_backend(pool) as be:  # an instance is passed through and left open
        assert be is pool and not runs_inline(be)
    with opened_backend(None) as be:
        assert be is None
