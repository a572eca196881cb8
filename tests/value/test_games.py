"""Games have known Shapley values: their closed forms agree with brute-force enumeration."""

import math

import numpy as np
import pytest

from shedkit.value import AdditiveGame, GloveGame, ProxyLikeGame, RandomGame, exact_shapley


def _close(a: dict, b: dict, tol=1e-12):
    assert a.keys() == b.keys()
    assert max(abs(a[p] - b[p]) for p in a) < tol


def test_additive_game_values_are_its_weights():
    game = AdditiveGame([0.5, -1.0, 2.0, 0.0], base=3.0)
    assert game(()) == 3.0  # v(∅) is the base, not 0
    assert game(["p0", "p2"]) == 5.5
    _close(exact_shapley(game), {"p0": 0.5, "p1": -1.0, "p2": 2.0, "p3": 0.0})
    _close(game.exact_values(), exact_shapley(game))


@pytest.mark.parametrize("left,right", [(1, 1), (2, 3), (3, 3), (4, 2), (1, 5)])
def test_glove_game_closed_form_matches_enumeration(left, right):
    game = GloveGame(left, right)
    _close(game.exact_values(), exact_shapley(game))
    assert sum(game.exact_values().values()) == pytest.approx(min(left, right))


def test_glove_game_textbook_value():
    # one left glove, two right gloves: the left glove is worth 2/3, each right 1/6
    values = GloveGame(1, 2).exact_values()
    assert values["L0"] == pytest.approx(2 / 3)
    assert values["R0"] == pytest.approx(1 / 6)


@pytest.mark.parametrize("n,seed", [(3, 0), (6, 1), (8, 2)])
def test_random_game_dividend_formula_matches_enumeration(n, seed):
    game = RandomGame(n, seed=seed)
    _close(game.exact_values(), exact_shapley(game), tol=1e-10)
    total = sum(game.exact_values().values())
    assert total == pytest.approx(game(game.players) - game(()))
    assert game(()) != 0.0


def test_exact_shapley_on_a_plain_function_and_player_order():
    def score(ids):
        return float(len(ids)) ** 2  # symmetric: everyone gets v(N)/n

    values = exact_shapley(score, ["c", "a", "b"])
    _close(values, {"a": 3.0, "b": 3.0, "c": 3.0})
    with pytest.raises(ValueError):
        exact_shapley(score)  # a plain function does not know its players


def test_exact_shapley_refuses_too_many_players():
    with pytest.raises(ValueError, match="2\\^n"):
        exact_shapley(lambda ids: 0.0, [str(i) for i in range(21)])


def test_proxy_like_game_is_deterministic_and_noisy():
    game = ProxyLikeGame(12, seed=3)
    s = game.players[:5]
    assert game(s) == game(tuple(reversed(s)))  # a set, not a sequence
    assert game(s) == ProxyLikeGame(12, seed=3)(s)
    quiet = ProxyLikeGame(12, seed=3, noise=0.0)
    assert game(s) != quiet(s)
    assert np.isfinite(list(exact_shapley(game).values())).all()
    assert math.isfinite(game(()))
