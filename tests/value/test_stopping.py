"""Stopping rules fire where they say, compose with & and |, and ignore the batch size."""

import time

import numpy as np
import pytest

from shedkit.value import (
    AntitheticMonteCarlo,
    MaxEvaluations,
    MaxPermutations,
    MaxTime,
    PermutationMonteCarlo,
    Progress,
    RandomGame,
    RankStability,
    ShedRemoval,
    StandardErrorBelow,
    build_stopping_rule,
)

GAME = RandomGame(8, seed=4)


def fit(stop, est=PermutationMonteCarlo, **kw):
    return est(stop=stop, seed=0, **kw).fit(GAME).result_


def test_max_permutations():
    assert fit(MaxPermutations(7)).n_permutations == 7
    assert fit(MaxPermutations(7), AntitheticMonteCarlo).n_permutations == 8  # whole pairs


def test_max_evaluations_stops_at_the_first_sample_that_reaches_it():
    result = fit(MaxEvaluations(60))
    assert result.n_evaluations >= 60
    assert fit(MaxPermutations(result.n_permutations - 1)).n_evaluations < 60
    assert "MaxEvaluations(60)" in result.stopped_by


def test_max_evaluations_counted_as_computed_excludes_the_cache():
    from shedkit.value import CachedUtility

    class Score:
        def __call__(self, ids):
            return GAME(ids)

    util = CachedUtility(Score(), None, "h", players=GAME.players)
    first = PermutationMonteCarlo(stop=MaxEvaluations(40, count="computed"), seed=0).fit(util).result_
    assert first.n_computed >= 40
    again = PermutationMonteCarlo(stop=MaxEvaluations(40, count="computed"), seed=0).fit(util).result_
    assert again.n_permutations > first.n_permutations  # cached evaluations were free


def test_max_time():
    class Slow(RandomGame):
        def evaluate(self, ids):
            time.sleep(0.002)
            return super().evaluate(ids)

    game = Slow(8, seed=4)
    start = time.monotonic()
    result = PermutationMonteCarlo(stop=MaxTime(0.2), seed=0).fit(game).result_
    took = time.monotonic() - start
    assert 0.2 <= result.elapsed < 1.5 and took < 2.0
    assert result.stopped_by == "MaxTime(0.2s)"


def test_standard_error_below():
    result = fit(StandardErrorBelow(0.3) | MaxPermutations(5000))
    assert result.stopped_by == "StandardErrorBelow(0.3)"
    assert np.all(result.stderr <= 0.3)
    before = fit(MaxPermutations(result.n_permutations - 1))
    assert np.any(before.stderr > 0.3)


def test_rank_stability():
    result = fit(RankStability(0.95, min_samples=10) | MaxPermutations(5000))
    assert result.stopped_by == "RankStability(0.95)"
    assert result.rank_stability() >= 0.95 and result.n_permutations >= 10
    before = fit(MaxPermutations(result.n_permutations - 1))
    assert before.n_permutations < 10 or not before.rank_stability() >= 0.95


def test_and_needs_both_or_needs_one():
    assert fit(MaxPermutations(5) & MaxPermutations(9)).n_permutations == 9
    assert fit(MaxPermutations(5) | MaxPermutations(9)).n_permutations == 5
    both = fit(MaxPermutations(5) | MaxEvaluations(10**6) | MaxPermutations(5))
    assert both.stopped_by == "MaxPermutations(5)"  # reasons are listed once
    rule = (StandardErrorBelow(1e-9) & MaxPermutations(3)) | MaxPermutations(12)
    assert fit(rule).n_permutations == 12
    assert rule.bounded and not (StandardErrorBelow(0.1) & RankStability()).bounded
    assert (StandardErrorBelow(0.1) | MaxTime(5)).bounded
    assert str(rule) == "((StandardErrorBelow(1e-09) & MaxPermutations(3)) | MaxPermutations(12))"


def test_stop_point_does_not_depend_on_batch_size():
    rule = RankStability(0.9) | MaxEvaluations(150)
    a = fit(rule, ShedRemoval, removal_k=2, batch_size=1)
    b = fit(rule, ShedRemoval, removal_k=2, batch_size=7)
    assert a.n_permutations == b.n_permutations and np.array_equal(a.values, b.values)


def test_progress_matches_the_result():
    result = fit(MaxPermutations(30), AntitheticMonteCarlo)
    progress = Progress(len(result.players), unit_size=2)
    for pair in result.marginals.reshape(-1, 2, len(result.players)):
        progress.add(pair.mean(axis=0))
    assert progress.n_permutations == 30
    assert np.allclose(progress.values, result.values)
    assert np.allclose(progress.stderr, result.stderr)
    assert progress.rank_stability() == pytest.approx(result.rank_stability())


def test_build_stopping_rule_from_cli_options():
    assert str(build_stopping_rule()) == "MaxPermutations(10)"
    rule = build_stopping_rule(permutations=50, max_evals=400, stderr_threshold=0.01, rank_stability=0.9)
    assert str(rule) == (
        "(MaxPermutations(50) | MaxEvaluations(400) | "
        "(StandardErrorBelow(0.01) & RankStability(0.9)))"
    )
    # a quality target alone runs until met, under a hard cap (issue 11), not the default T=10
    assert str(build_stopping_rule(rank_stability=0.9)) == "(RankStability(0.9) | HardCap(100 permutations))"


def test_invalid_rules():
    with pytest.raises(ValueError):
        MaxPermutations(0)
    with pytest.raises(ValueError):
        MaxEvaluations(10, count="fresh")
    with pytest.raises(ValueError):
        RankStability(1.5)


def test_rules_read_a_finished_result_too():
    result = fit(MaxPermutations(12))
    assert MaxPermutations(12).check(result) and not MaxPermutations(13).check(result)
    assert MaxEvaluations(result.n_evaluations).check(result)
    assert StandardErrorBelow(float(result.stderr.max())).check(result)
    assert RankStability(-0.99).check(result)
