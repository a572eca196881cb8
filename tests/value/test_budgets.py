"""Evaluation-granular runs (issue 11): budgets hold per fine-tune, progress counts each one."""

import os
import time
import uuid

import numpy as np
import pytest

from shedkit.execute.backends import ProcessPoolBackend
from shedkit.value import (
    AdditiveGame,
    MaxEvaluations,
    MaxPermutations,
    MaxTime,
    PermutationMonteCarlo,
    RandomGame,
    StandardErrorBelow,
    build_stopping_rule,
    describe_stopping,
    make_estimator,
)


class CountingGame(AdditiveGame):
    """An additive game on K players that writes one file per evaluation into ``log_dir``
    (so evaluations made in worker processes are counted too) and may sleep."""

    def __init__(self, n_players: int, log_dir: str, sleep: float = 0.0):
        super().__init__([((i * 37) % 11 - 5) / 10 for i in range(n_players)], base=0.5)
        self.log_dir, self.sleep = str(log_dir), sleep

    def evaluate(self, ids):
        if self.sleep:
            time.sleep(self.sleep)
        open(os.path.join(self.log_dir, uuid.uuid4().hex), "w").close()
        return super().evaluate(ids)

    def count(self) -> int:
        return len(os.listdir(self.log_dir))


K = 500
NAMES = {
    "shed": {"removal_k": 1},
    "shed_k5_truncated": {"removal_k": 5, "truncation": 0.05},
    "mc": {},
    "tmc": {},
    "antithetic": {},
    "msr": {},
    "stratified": {},
    "cv": {},
    "regression": {},
}


def _estimator(key, **kw):
    name = key.split("_")[0]
    return make_estimator(name, **NAMES[key], **kw)


@pytest.mark.parametrize("key", NAMES)
def test_max_evals_on_500_players_sequential(tmp_path, key):
    game = CountingGame(K, tmp_path)
    seen = []
    result = _estimator(key, stop=MaxEvaluations(30), seed=0, progress=seen.append).fit(game).result_
    assert game.count() <= 30 + 1  # one worker
    assert result.n_evaluations == game.count() == len(seen)  # progress counted every one
    assert "MaxEvaluations(30)" in result.stopped_by


@pytest.mark.parametrize("key", ["shed", "tmc", "msr"])
def test_max_evals_with_two_workers(tmp_path, key):
    game = CountingGame(K, tmp_path)
    with ProcessPoolBackend(workers=2) as backend:
        result = _estimator(key, stop=MaxEvaluations(30), seed=0).fit(game, backend=backend).result_
    assert game.count() <= 30 + 2
    assert result.n_evaluations <= 30


def test_max_time_overruns_by_at_most_one_evaluation_per_worker(tmp_path):
    step = 0.05
    game = CountingGame(K, tmp_path, sleep=step)
    start = time.monotonic()
    result = _estimator("shed", stop=MaxTime(0.3), seed=0).fit(game).result_
    took = time.monotonic() - start
    # a whole SHED walk on 500 players would take 25 s; the rule fires mid-walk
    assert result.stopped_by == "MaxTime(0.3s)"
    assert took < 0.3 + step + 0.25
    assert game.count() <= (0.3 + 0.25) / step + 1
    assert result.n_permutations == 0  # the cut permutation is not used (it would be biased)
    # an empty result still answers its diagnostics (nan), as a run cut before its first sample does
    assert np.isnan(result.rank_stability()) and np.isnan(result.stderr).all()


def test_max_time_with_two_workers(tmp_path):
    step = 0.3
    game = CountingGame(K, tmp_path, sleep=step)
    with ProcessPoolBackend(workers=2) as backend:
        list(backend.run(abs, [1, 2]))  # start the workers before the clock
        start = time.monotonic()
        result = _estimator("mc", stop=MaxTime(0.5), seed=0).fit(game, backend=backend).result_
        took = time.monotonic() - start
    assert result.stopped_by == "MaxTime(0.5s)"
    # the in-flight pair finishes after the rule fires (one fine-tune per worker), no more;
    # the slack is for pickling and a loaded machine
    assert took < 0.5 + step + 1.0
    assert game.count() <= 2 * np.ceil(took / step) + 2


def test_progress_bar_counts_every_evaluation_and_plans_them():
    game = RandomGame(8, seed=0)
    est = PermutationMonteCarlo(stop=MaxPermutations(5), seed=0, progress=True)
    assert est.planned_evaluations(8) == 2 + 5 * 7
    result = est.fit(game).result_
    assert result.n_evaluations <= 2 + 5 * 7
    seen = []
    PermutationMonteCarlo(stop=MaxPermutations(5), seed=0, progress=lambda s: seen.append(s.n_evaluations)).fit(game)
    assert seen == list(range(1, result.n_evaluations + 1))


def test_a_quality_target_alone_runs_past_ten_permutations_under_a_printed_cap():
    game = RandomGame(7, seed=3)
    rule = build_stopping_rule(stderr_threshold=0.05)
    assert "HardCap(100 permutations)" in str(rule)
    assert "at most 602 evaluations" in describe_stopping(rule, per_permutation=6)
    result = PermutationMonteCarlo(stop=rule, seed=0).fit(game).result_
    assert result.n_permutations > 10
    assert result.stopped_by in ("StandardErrorBelow(0.05)", "HardCap(100 permutations)")
    assert np.all(result.stderr <= 0.05) or result.n_permutations == 100


def test_stop_mid_permutation_keeps_the_estimate_on_whole_samples(tmp_path):
    # the same seed with a larger budget folds the same first samples: a stopped run is a
    # prefix of a longer one, never a blend with a cut permutation
    game = RandomGame(9, seed=1)
    short = PermutationMonteCarlo(stop=MaxEvaluations(40), seed=5).fit(game).result_
    longer = PermutationMonteCarlo(stop=MaxEvaluations(400), seed=5).fit(game).result_
    t = short.n_permutations
    assert 0 < t < longer.n_permutations
    assert np.array_equal(short.marginals, longer.marginals[:t])
    assert np.allclose(short.efficiency_gaps(), 0.0)
