"""Estimators against known answers: exact Shapley values, efficiency, seeds, persistence."""

import numpy as np
import pytest

from shedkit.errors import ShedkitError
from shedkit.value import (
    AdditiveGame,
    AntitheticMonteCarlo,
    GloveGame,
    MaxPermutations,
    PermutationMonteCarlo,
    ProxyLikeGame,
    RandomGame,
    ShedRemoval,
    TruncatedMonteCarlo,
    ValuationResult,
    estimate_values,
    make_estimator,
)

GAMES = {
    "additive": AdditiveGame([1.0, -0.5, 2.0, 0.25, 0.0, 3.0, -1.5], base=0.7),
    "glove": GloveGame(3, 4),
    "random7": RandomGame(7, seed=11),
}

# estimators that are unbiased for the Shapley value
UNBIASED = {
    "shed_k1": lambda **kw: ShedRemoval(removal_k=1, **kw),
    "mc": lambda **kw: PermutationMonteCarlo(**kw),
    "antithetic": lambda **kw: AntitheticMonteCarlo(**kw),
}


def _aligned(result, values: dict) -> np.ndarray:
    return np.array([values[p] for p in result.players])


def _assert_within_stderr(result, expected: dict, z=4.0):
    err = np.abs(result.values - _aligned(result, expected))
    assert np.all(err <= z * result.stderr + 1e-9), (err, result.stderr)


@pytest.mark.parametrize("game", GAMES, ids=str)
@pytest.mark.parametrize("name", UNBIASED, ids=str)
def test_unbiased_estimators_converge_to_exact_shapley(game, name):
    g = GAMES[game]
    result = UNBIASED[name](stop=MaxPermutations(1500), seed=3).fit(g).result_
    _assert_within_stderr(result, g.exact_values())
    # and the error is small in absolute terms, not just relative to a large stderr
    spread = np.ptp(_aligned(result, g.exact_values())) or 1.0
    assert np.max(np.abs(result.values - _aligned(result, g.exact_values()))) < 0.1 * spread


def test_truncated_mc_is_unbiased_on_a_monotone_game_with_zero_tolerance():
    # in the glove game v never exceeds v(full) and never decreases, so once the running score
    # equals v(full) every remaining marginal is truly 0: truncation loses nothing
    game = GAMES["glove"]
    result = TruncatedMonteCarlo(rtol=0.0, stop=MaxPermutations(1500), seed=3).fit(game).result_
    _assert_within_stderr(result, game.exact_values())
    assert np.allclose(result.efficiency_gaps(), 0.0)
    # on a non-monotone game the remaining players' marginals may merely cancel: 2 - 0.5 - 1.5
    # = 0 in the additive game, so even tolerance 0 gives them 0 instead of their weights
    expected = TruncatedMonteCarlo(rtol=0.0).expected_values(AdditiveGame([2.0, -0.5, -1.5, 1.0]))
    assert expected != pytest.approx({"p0": 2.0, "p1": -0.5, "p2": -1.5, "p3": 1.0})


@pytest.mark.parametrize(
    "estimator",
    [ShedRemoval(removal_k=3), ShedRemoval(removal_k=2, group_credit="full"), TruncatedMonteCarlo(rtol=0.2)],
    ids=["shed_k3", "shed_k2_full", "tmc_rtol0.2"],
)
def test_biased_estimators_converge_to_their_own_exact_expectation(estimator):
    game = RandomGame(6, seed=5)
    expected = estimator.expected_values(game)  # exact mean over all 720 permutations
    estimator.stop, estimator.seed = MaxPermutations(3000), 1
    result = estimator.fit(game).result_
    _assert_within_stderr(result, expected)


def test_shed_group_removal_on_additive_game_has_the_blended_closed_form():
    # with k | n, a player's group is itself plus k-1 uniform others, so with split credit
    # E[value_i] = (w_i + (k-1) * mean_{j != i} w_j) / k: the ranking survives, the scale shrinks
    w = np.array([3.0, -1.0, 0.5, 2.0, 0.0, 1.0])
    game, k = AdditiveGame(w), 3
    expected = (w + (k - 1) * (w.sum() - w) / (len(w) - 1)) / k
    got = ShedRemoval(removal_k=k).expected_values(game)
    assert np.allclose([got[p] for p in game.players], expected)
    assert PermutationMonteCarlo().expected_values(game) == pytest.approx(game.exact_values())


@pytest.mark.parametrize(
    "estimator",
    [ShedRemoval(removal_k=1), ShedRemoval(removal_k=3), PermutationMonteCarlo(), AntitheticMonteCarlo()],
    ids=["shed_k1", "shed_k3", "mc", "antithetic"],
)
@pytest.mark.parametrize("game", ["random7", "glove"])
def test_efficiency_holds_for_every_permutation(estimator, game):
    estimator.stop, estimator.seed = MaxPermutations(40), 0
    result = estimator.fit(GAMES[game]).result_
    assert result.n_permutations == 40
    assert np.allclose(result.efficiency_gaps(), 0.0, atol=1e-12)
    assert result.values.sum() == pytest.approx(result.v_full - result.v_empty)


def test_truncated_mc_efficiency_is_within_the_tolerance():
    # a permutation's marginals sum to v(S_stop) - v(∅) with |v(S_stop) - v(full)| <= tolerance
    game = GAMES["additive"]
    est = TruncatedMonteCarlo(rtol=0.1, stop=MaxPermutations(200), seed=0)
    result = est.fit(game).result_
    tol = 0.1 * abs(result.v_full - result.v_empty)
    gaps = np.abs(result.efficiency_gaps())
    assert np.all(gaps <= tol + 1e-12)
    assert gaps.max() > 0  # it did truncate, so efficiency is only approximate


def test_truncated_mc_saves_evaluations():
    game = ProxyLikeGame(20, seed=0)
    run = lambda est: est(stop=MaxPermutations(20), seed=0).fit(game).result_.n_evaluations  # noqa: E731
    assert run(TruncatedMonteCarlo) < 0.9 * run(PermutationMonteCarlo)


def test_shed_full_credit_is_k_times_split_credit_when_k_divides_n():
    game = RandomGame(6, seed=2)
    split = ShedRemoval(removal_k=3, stop=MaxPermutations(30), seed=4).fit(game).result_
    full = ShedRemoval(removal_k=3, group_credit="full", stop=MaxPermutations(30), seed=4).fit(game).result_
    assert np.allclose(full.values, 3 * split.values)
    assert np.allclose(full.efficiency_gaps(), 2 * (full.v_full - full.v_empty))


@pytest.mark.parametrize("name", ["shed", "mc", "tmc", "antithetic"])
def test_same_seed_same_values_other_seed_other_values(name):
    game = RandomGame(7, seed=0)
    run = lambda seed: estimate_values(game, name, stop=MaxPermutations(10), seed=seed)  # noqa: E731
    a, b, c = run(42), run(42), run(43)
    assert np.array_equal(a.values, b.values) and np.array_equal(a.permutations, b.permutations)
    assert not np.array_equal(a.values, c.values)


def test_removal_uses_n_over_k_evaluations_per_permutation():
    game = RandomGame(8, seed=0)
    for k, steps in [(1, 8), (3, 3), (8, 1)]:
        est = ShedRemoval(removal_k=k, stop=MaxPermutations(1), seed=0)
        # one permutation: the full set, n/k removals (the last one reaching ∅)
        assert est.fit(game).result_.n_evaluations == steps + 1


def test_result_save_load_round_trip(tmp_path):
    result = AntitheticMonteCarlo(stop=MaxPermutations(12), seed=9).fit(GAMES["random7"]).result_
    path = result.save(tmp_path / "values.json")
    loaded = ValuationResult.load(path)
    assert np.array_equal(loaded.values, result.values)
    assert np.array_equal(loaded.stderr, result.stderr)
    assert np.array_equal(loaded.marginals, result.marginals)
    assert np.array_equal(loaded.permutations, result.permutations)
    assert (loaded.estimator, loaded.seed, loaded.unit_size) == ("antithetic", 9, 2)
    assert loaded.running_values().shape == (6, 7)
    assert np.allclose(loaded.running_values()[-1], loaded.values)
    assert loaded.ranking()[0] == result.players[int(np.argmax(result.values))]
    assert not list(tmp_path.glob("*.tmp"))


def test_antithetic_pairs_are_one_sample():
    result = AntitheticMonteCarlo(stop=MaxPermutations(7), seed=0).fit(GAMES["glove"]).result_
    assert result.n_permutations == 8  # stops at a pair boundary
    p = result.permutations
    assert all(np.array_equal(p[i], p[i + 1][::-1]) for i in range(0, 8, 2))
    assert result.counts.tolist() == [8] * 7


def test_registry_errors_name_the_choices():
    with pytest.raises(ShedkitError, match="did you mean 'shed'"):
        make_estimator("shad")
    with pytest.raises(ShedkitError, match="does not take"):
        make_estimator("mc", removal_k=3)
    with pytest.raises(ShedkitError, match="removal_k"):
        make_estimator("shed", removal_k=0)
    with pytest.raises(ShedkitError, match="distinct"):
        ShedRemoval().fit(GAMES["glove"], players=["L0", "L0"])


def test_truncated_mc_when_empty_and_full_already_agree():
    # v(∅) == v(full): every permutation truncates at once, every marginal is 0
    game = AdditiveGame([1.0, -1.0, 0.5, -0.5])
    result = TruncatedMonteCarlo(stop=MaxPermutations(5), seed=0).fit(game).result_
    assert result.n_permutations == 5 and not result.marginals.any()
    assert result.n_evaluations == 2


def test_unbounded_rule_warns_and_progress_bar_runs():
    from shedkit.value import StandardErrorBelow

    with pytest.warns(UserWarning, match="caps neither"):
        ShedRemoval(stop=StandardErrorBelow(10.0), seed=0).fit(GAMES["glove"])
    result = ShedRemoval(stop=MaxPermutations(3), seed=0, progress=True).fit(GAMES["glove"]).result_
    assert result.n_permutations == 3


def test_unseeded_run_records_its_seed_and_can_be_replayed():
    first = PermutationMonteCarlo(stop=MaxPermutations(4)).fit(GAMES["random7"]).result_
    again = PermutationMonteCarlo(stop=MaxPermutations(4), seed=first.seed).fit(GAMES["random7"]).result_
    assert np.array_equal(first.values, again.values)
