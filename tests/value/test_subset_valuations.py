"""MSR Banzhaf, stratified and control-variate Shapley against exact values; truncation for
every permutation walk; adding a valuation is one class and one registry line."""

import numpy as np
import pytest

from shedkit.errors import ShedkitError
from shedkit.value import (
    AdditiveGame,
    ControlVariateShapley,
    GloveGame,
    MaxEvaluations,
    MaxPermutations,
    MSRBanzhaf,
    PermutationMonteCarlo,
    ProxyLikeGame,
    RandomGame,
    RegressionShapley,
    ShedRemoval,
    StratifiedShapley,
    ValuationResult,
    Valuation,
    exact_banzhaf,
    exact_shapley,
    make_estimator,
)
from shedkit.value.registry import VALUATIONS, get_valuation, register_valuation
from shedkit.value.result import spearman

GAMES = {
    "additive": AdditiveGame([1.0, -0.5, 2.0, 0.25, 0.0, 3.0, -1.5], base=0.7),
    "glove": GloveGame(3, 4),
    "random7": RandomGame(7, seed=11),
}
SEEDS = range(6)


def _mean_over_seeds_within_4_stderr(make, game, exact, permutations):
    runs = [make(stop=MaxPermutations(permutations), seed=s).fit(game).result_ for s in SEEDS]
    truth = np.array([exact[p] for p in runs[0].players])
    mean = np.mean([r.values for r in runs], axis=0)
    stderr = np.sqrt(np.mean([r.stderr**2 for r in runs], axis=0) / len(runs))
    assert np.all(np.isfinite(stderr))
    assert np.all(np.abs(mean - truth) <= 4 * stderr + 1e-7), (mean - truth, stderr)
    spread = np.ptp(truth) or 1.0
    assert np.max(np.abs(mean - truth)) < 0.1 * spread
    return runs


@pytest.mark.parametrize("game", GAMES)
@pytest.mark.parametrize("cls", [StratifiedShapley, ControlVariateShapley, RegressionShapley],
                         ids=["stratified", "cv", "regression"])
def test_stratified_and_control_variate_converge_to_exact_shapley(cls, game):
    g = GAMES[game]
    _mean_over_seeds_within_4_stderr(cls, g, g.exact_values(), permutations=60)


@pytest.mark.parametrize("game", GAMES)
def test_msr_converges_to_exact_banzhaf(game):
    g = GAMES[game]
    exact = exact_banzhaf(g)
    _mean_over_seeds_within_4_stderr(MSRBanzhaf, g, exact, permutations=150)
    if game == "additive":  # on an additive game Banzhaf = Shapley = the weights
        assert exact == pytest.approx(exact_shapley(g))


def test_exact_banzhaf_of_the_glove_game_by_hand():
    # one left, two right gloves: L completes a pair with any non-empty set of rights (3 of 4
    # subsets of the others); a right glove completes one only with L and without the other
    # right (1 of 4)
    assert exact_banzhaf(GloveGame(1, 2)) == pytest.approx({"L0": 0.75, "R0": 0.25, "R1": 0.25})


def test_control_variate_removes_the_additive_part():
    # on an additive game the fitted surrogate is the game: the values are exact (up to the
    # ridge) and so efficient, with near-zero standard errors
    game = GAMES["additive"]
    result = ControlVariateShapley(stop=MaxPermutations(20), seed=0).fit(game).result_
    assert np.allclose(result.values, game.weights, atol=2e-3)
    assert result.stderr.max() < 2e-3
    assert result.values.sum() == pytest.approx(result.v_full - result.v_empty, abs=1e-2)
    plain = StratifiedShapley(stop=MaxPermutations(20), seed=0).fit(game).result_
    assert plain.stderr.max() > 10 * result.stderr.max()


def test_control_variate_with_a_given_surrogate():
    game = ProxyLikeGame(12, seed=3, noise=0.0)
    reference = exact_shapley(game)
    surrogate = {p: 2.0 * v for p, v in reference.items()}  # a scaled first-order guess
    truth = np.array([reference[p] for p in game.players])

    def rmse(make):
        runs = [make(stop=MaxPermutations(15), seed=s).fit(game).result_ for s in SEEDS]
        return np.mean([np.sqrt(np.mean((r.values - truth) ** 2)) for r in runs]), runs[0]

    given, result = rmse(lambda **kw: ControlVariateShapley(surrogate=surrogate, **kw))
    fitted, _ = rmse(ControlVariateShapley)
    plain, _ = rmse(StratifiedShapley)
    assert given < 0.8 * plain and fitted < 0.8 * plain
    assert result.params["surrogate"] == "given"
    with pytest.raises(ShedkitError, match="no value for"):
        ControlVariateShapley(surrogate={"x00": 1.0}).fit(game)


def test_a_given_surrogate_is_used_from_the_first_sample():
    # the given surrogate is scaled on v(∅) and v(full) before any sample: on an additive game
    # a surrogate proportional to the weights makes the estimate exact after one fine-tune past
    # those two, where the fitted (linear) surrogate needs the 2n border evaluations first
    game = GAMES["additive"]
    surrogate = {p: 3.0 * w for p, w in zip(game.players, game.weights)}
    given = ControlVariateShapley(surrogate=surrogate, stop=MaxEvaluations(3), seed=0).fit(game).result_
    assert given.n_evaluations == 3
    assert np.allclose(given.values, game.weights, atol=1e-9)
    fitted = ControlVariateShapley(stop=MaxEvaluations(3), seed=0).fit(game).result_
    assert not np.allclose(fitted.values, game.weights, atol=1e-2)


def test_given_surrogate_fit_recovers_scale_and_intercept():
    from shedkit.value.surrogates import fit_given

    rng = np.random.default_rng(0)
    g = rng.normal(size=9)
    truth = 0.3 * g + 0.05  # an additive game whose values are an affine map of the surrogate
    X = np.array([np.zeros(9), np.ones(9), rng.random(9) < 0.5], dtype=bool)
    y = X @ truth
    np.testing.assert_allclose(fit_given(X, y, g, total=truth.sum()), truth, atol=1e-12)
    # with only ∅ and the full set, a proportional positive surrogate is scaled to the total (b = 0)
    pos = np.abs(g) + 1.0
    np.testing.assert_allclose(fit_given(X[:2], (X @ pos)[:2] / 4, pos, total=pos.sum() / 4), pos / 4, atol=1e-12)
    # a constant surrogate splits the total evenly
    np.testing.assert_allclose(fit_given(X, y, np.ones(9), total=0.9), np.full(9, 0.1))


def test_a_centred_given_surrogate_keeps_its_ranking_before_any_sample():
    # a first-order surrogate with the pool's mean removed sums to ~0: scaled alone to
    # v(full) − v(∅) its scale was 1/Σg (×10^15 here); with the intercept the values before any
    # sample rank as the surrogate, sum to the total and stay of the size of the true values
    game = AdditiveGame([0.4, 0.1, 0.9, 0.25, 0.6, 0.3], base=0.2)
    g = game.weights - game.weights.mean()
    surrogate = dict(zip(game.players, g))
    before = ControlVariateShapley(surrogate=surrogate, stop=MaxEvaluations(2), seed=0).fit(game).result_
    assert before.n_evaluations == 2
    assert spearman(before.values, game.weights) == pytest.approx(1.0)
    assert before.values.sum() == pytest.approx(game.weights.sum())
    assert np.abs(before.values).max() < 3 * np.abs(game.weights).max()
    # one informative subset fixes the scale: every later sample is corrected exactly, and the
    # estimate converges to the weights (the one sample corrected with the prior is unbiased)
    after = ControlVariateShapley(surrogate=surrogate, stop=MaxEvaluations(40), seed=0).fit(game).result_
    np.testing.assert_allclose(after.values, game.weights, atol=0.05)


def test_a_given_surrogates_running_fit_equals_the_batch_fit():
    """The given surrogate's scale and intercept come from two running sums (O(n) a refit):
    after every sample they equal fit_given over ∅, the full set and every subset so far."""
    from shedkit.value.surrogates import fit_given

    game = GAMES["random7"]
    g = np.random.default_rng(5).normal(size=len(game.players))
    seen = []

    class Checked(ControlVariateShapley):
        def _after_fold(self, state, subset, value):
            super()._after_fold(state, subset, value)
            mask = np.zeros(state.n_players, bool)
            mask[subset] = True
            seen.append((mask, value))
            n, ctx = state.n_players, state.ctx
            X = np.vstack([np.zeros(n, bool), np.ones(n, bool), *[m for m, _ in seen]])
            y = np.array([ctx.v_empty, ctx.v_full, *[v for _, v in seen]]) - ctx.v_empty
            np.testing.assert_allclose(self._surrogate, fit_given(X, y, g, total=ctx.v_full - ctx.v_empty),
                                       rtol=1e-9, atol=1e-12)

    result = Checked(surrogate=dict(zip(game.players, g)), stop=MaxEvaluations(60), seed=0).fit(game).result_
    assert len(seen) >= 20 and result.n_evaluations <= 60


def test_regression_is_exact_on_additive_games_and_always_efficient():
    game = GAMES["additive"]
    result = RegressionShapley(stop=MaxPermutations(3), seed=0).fit(game).result_
    assert np.allclose(result.values, game.weights, atol=1e-6) and result.stderr.max() < 1e-6
    other = RegressionShapley(stop=MaxEvaluations(40), seed=1).fit(GAMES["random7"]).result_
    assert other.values.sum() == pytest.approx(other.v_full - other.v_empty)
    assert other.n_evaluations <= 40


def test_subset_valuation_results_are_plain_and_round_trip(tmp_path):
    result = MSRBanzhaf(stop=MaxEvaluations(50), seed=0).fit(GAMES["random7"]).result_
    assert result.is_plain and result.n_evaluations <= 50
    assert result.info["n_samples"] > 0 and np.isfinite(result.rank_stability())
    loaded = ValuationResult.load(result.save(tmp_path / "msr.json"))
    assert np.array_equal(loaded.values, result.values)
    assert loaded.rank_stability() == result.rank_stability()


@pytest.mark.parametrize("name", ["msr", "stratified", "cv", "regression"])
def test_same_seed_same_values(name):
    game = RandomGame(7, seed=0)
    run = lambda seed: make_estimator(name, stop=MaxPermutations(8), seed=seed).fit(game).result_.values  # noqa: E731
    assert np.array_equal(run(1), run(1)) and not np.array_equal(run(1), run(2))


# -- truncation and antithetic sampling for every permutation walk ---------------------------


def test_truncated_shed_removal_is_exact_on_a_monotone_game_with_zero_tolerance():
    game = GAMES["glove"]
    est = ShedRemoval(removal_k=1, truncation=0.0)
    assert est.expected_values(game) == pytest.approx(game.exact_values())
    est.stop, est.seed = MaxPermutations(40), 0
    result = est.fit(game).result_
    assert np.allclose(result.efficiency_gaps(), 0.0)


def test_truncated_shed_removal_saves_evaluations_and_stays_within_tolerance():
    # two left gloves, twelve right: once both lefts are removed v(S) = v(∅) = 0 and the walk
    # stops (a removal walk only truncates where what is left is worth about nothing)
    game = GloveGame(2, 12)
    full = ShedRemoval(removal_k=2, stop=MaxPermutations(20), seed=0).fit(game).result_
    cut = ShedRemoval(removal_k=2, truncation=0.1, stop=MaxPermutations(20), seed=0).fit(game).result_
    assert cut.n_evaluations < 0.9 * full.n_evaluations
    tol = 0.1 * abs(cut.v_full - cut.v_empty)
    assert np.all(np.abs(cut.efficiency_gaps()) <= tol + 1e-12)
    assert cut.params["truncation_rtol"] == 0.1


def test_expected_value_of_truncated_removal_matches_its_runs():
    game = RandomGame(6, seed=5)
    est = ShedRemoval(removal_k=2, truncation=0.3)
    expected = est.expected_values(game)
    est.stop, est.seed = MaxPermutations(3000), 1
    result = est.fit(game).result_
    err = np.abs(result.values - np.array([expected[p] for p in result.players]))
    assert np.all(err <= 4 * result.stderr + 1e-9)


def test_antithetic_option_works_for_shed_and_is_unbiased():
    game = GAMES["random7"]
    result = ShedRemoval(antithetic=True, stop=MaxPermutations(1500), seed=3).fit(game).result_
    p = result.permutations
    assert result.unit_size == 2 and np.array_equal(p[0], p[1][::-1])
    exact = np.array([game.exact_values()[q] for q in result.players])
    assert np.all(np.abs(result.values - exact) <= 4 * result.stderr + 1e-9)
    assert np.allclose(result.efficiency_gaps(), 0.0)
    tmc_pairs = make_estimator("tmc", antithetic=True, stop=MaxPermutations(4), seed=0).fit(game).result_
    assert tmc_pairs.unit_size == 2 and tmc_pairs.params["antithetic"] is True


# -- adding a valuation: one class, one registry line ----------------------------------------


class ExactShapleyValuation(Valuation):
    """A closed-form valuation for small games: enumerate all subsets (2^n evaluations)."""

    name = "exact"

    def fit(self, utility, players=None, backend=None):
        players = tuple(players or utility.players)
        self.result_ = ValuationResult.from_values(
            players, [exact_shapley(utility, players)[p] for p in players],
            stderr=np.zeros(len(players)), counts=np.full(len(players), 2 ** len(players)),
            estimator=self.name,
        )
        return self


def test_adding_a_valuation_is_one_class_and_one_registry_line():
    register_valuation("exact", f"{__name__}:ExactShapleyValuation")
    try:
        game = GAMES["random7"]
        exact = get_valuation("exact")().fit(game).result_
        sampled = PermutationMonteCarlo(stop=MaxPermutations(200), seed=0).fit(game).result_
        merged = exact.merge(sampled)  # counts weight the exact result 128 : 200
        assert merged.counts.tolist() == [128 + 200] * 7
        assert np.allclose(exact.values, list(game.exact_values().values()))
    finally:
        VALUATIONS.pop("exact")
