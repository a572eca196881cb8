"""A run stopped at any point and started again recomputes nothing it finished and gives the
same values as a run that was never interrupted."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from shedkit.value import CachedUtility, MaxPermutations, ProxyLikeGame, ShedRemoval, TruncatedMonteCarlo

GAME = ProxyLikeGame(10, seed=7)
SRC = Path(__file__).resolve().parents[2] / "src"


class Score:
    """The game as a fine-tune stand-in; raises after ``fail_after`` calls when asked to."""

    def __init__(self, fail_after=None):
        self.fail_after, self.calls = fail_after, 0

    def __call__(self, ids):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("stopped mid-run")
        self.calls += 1
        return GAME(ids)


def estimate(utility, estimator="shed"):
    if estimator == "shed":
        est = ShedRemoval(removal_k=2, stop=MaxPermutations(8), seed=3)
    else:
        est = TruncatedMonteCarlo(stop=MaxPermutations(8), seed=3, batch_size=3)
    return est.fit(utility).result_


@pytest.mark.parametrize("estimator", ["shed", "tmc"])
@pytest.mark.parametrize("fail_after", [1, 17, 30])
def test_interrupted_run_resumes_without_recomputing(tmp_path, estimator, fail_after):
    reference = estimate(CachedUtility(Score(), tmp_path / "ref", "s", GAME.players), estimator)
    total = reference.n_computed
    assert fail_after < total

    with pytest.raises(KeyboardInterrupt):
        estimate(CachedUtility(Score(fail_after), tmp_path / "run", "s", GAME.players), estimator)
    assert len(list((tmp_path / "run").rglob("*.json"))) == fail_after

    score = Score()
    resumed = estimate(CachedUtility(score, tmp_path / "run", "s", GAME.players), estimator)
    assert resumed.n_computed == score.calls == total - fail_after  # nothing finished is redone
    assert resumed.n_reused >= fail_after
    assert np.array_equal(resumed.values, reference.values)
    assert np.array_equal(resumed.marginals, reference.marginals)

    again = estimate(CachedUtility(Score(), tmp_path / "run", "s", GAME.players), estimator)
    assert again.n_computed == 0 and np.array_equal(again.values, reference.values)


def test_longer_run_extends_a_finished_one_from_the_cache(tmp_path):
    util = lambda: CachedUtility(Score(), tmp_path, "s", GAME.players)  # noqa: E731
    short = ShedRemoval(stop=MaxPermutations(5), seed=1).fit(util()).result_
    longer = ShedRemoval(stop=MaxPermutations(9), seed=1).fit(util()).result_
    assert np.array_equal(longer.marginals[:5], short.marginals)  # same permutation stream
    assert longer.n_computed == longer.n_evaluations - short.n_evaluations


KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    from shedkit.value import CachedUtility, MaxPermutations, ProxyLikeGame, ShedRemoval

    game, calls = ProxyLikeGame(10, seed=7), [0]

    def score(ids):  # a hard kill after N fine-tunes: no exception handler, no cleanup runs
        if calls[0] == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)
        calls[0] += 1
        return game(ids)

    util = CachedUtility(score, sys.argv[1], "s", game.players)
    ShedRemoval(removal_k=2, stop=MaxPermutations(8), seed=3).fit(util)
    """
)


def test_killed_process_resumes_without_recomputing(tmp_path):
    reference = estimate(CachedUtility(Score(), tmp_path / "ref", "s", GAME.players))
    env = {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(tmp_path / "run"), "13"], env=env, capture_output=True
    )
    assert proc.returncode == -9, proc.stderr.decode()
    assert len(list((tmp_path / "run").rglob("*.json"))) == 13
    score = Score()
    resumed = estimate(CachedUtility(score, tmp_path / "run", "s", GAME.players))
    assert score.calls == reference.n_computed - 13
    assert np.array_equal(resumed.values, reference.values)
