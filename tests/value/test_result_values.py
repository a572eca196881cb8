"""Plain-values results (from_values), merging, and the lazy valuation registry."""

import sys

import numpy as np
import pytest

from shedkit.errors import ShedkitError
from shedkit.value import MaxPermutations, PermutationMonteCarlo, RandomGame, ValuationResult
from shedkit.value.registry import VALUATIONS, get_valuation


def test_from_values_round_trips(tmp_path):
    result = ValuationResult.from_values(
        ["a", "b", "c"], [0.5, -1.0, 2.0], stderr=[0.1, float("nan"), 0.3], counts=[4, 1, 2],
        estimator="first-order", v_empty=1.0, checkpoints=3,
    )
    assert result.is_plain and result.n_permutations == 0
    assert result.as_dict() == {"a": 0.5, "b": -1.0, "c": 2.0}
    assert result.ranking() == ["c", "a", "b"]
    assert result.estimator == "first-order" and result.info == {"checkpoints": 3}
    loaded = ValuationResult.load(result.save(tmp_path / "v.json"))
    assert loaded.is_plain
    assert np.array_equal(loaded.values, result.values)
    assert np.array_equal(loaded.stderr, result.stderr, equal_nan=True)
    assert loaded.counts.tolist() == [4, 1, 2]
    assert (loaded.estimator, loaded.v_empty, loaded.info) == ("first-order", 1.0, {"checkpoints": 3})
    with pytest.raises(ValueError, match="one entry per player"):
        ValuationResult.from_values(["a", "b"], [1.0])


def test_merge_plain_is_count_weighted():
    a = ValuationResult.from_values(["x", "y"], [1.0, 4.0], stderr=[0.2, 0.4], counts=[1, 3])
    b = ValuationResult.from_values(["y", "x"], [0.0, 3.0], stderr=[0.3, 0.1], counts=[1, 3])
    m = a.merge(b)
    assert m.players == ("x", "y")
    assert m.values.tolist() == pytest.approx([(1 * 1 + 3 * 3) / 4, (3 * 4 + 1 * 0) / 4])
    assert m.counts.tolist() == [4, 4]
    assert m.stderr[0] == pytest.approx(np.sqrt(0.2**2 + (3 * 0.1) ** 2) / 4)
    zero = ValuationResult.from_values(["x", "y"], [9.0, 9.0], counts=[0, 0])
    assert a.merge(zero).values.tolist() == [1.0, 4.0]
    with pytest.raises(ValueError, match="same players"):
        a.merge(ValuationResult.from_values(["x", "z"], [0, 0]))


def test_merge_of_two_permutation_runs_equals_one_longer_run():
    game = RandomGame(6, seed=1)
    a = PermutationMonteCarlo(stop=MaxPermutations(7), seed=1).fit(game).result_
    b = PermutationMonteCarlo(stop=MaxPermutations(5), seed=2).fit(game).result_
    m = a.merge(b)
    assert not m.is_plain and m.n_permutations == 12
    assert np.allclose(m.values, (7 * a.values + 5 * b.values) / 12)
    assert np.allclose(m.efficiency_gaps(), 0.0)
    # a plain and a permutation result combine by counts too
    plain = ValuationResult.from_values(game.players, a.values, a.stderr, a.counts)
    assert np.allclose(plain.merge(b).values, m.values)


def test_registry_is_lazy_and_suggests():
    assert VALUATIONS["first-order"] == "shedkit.value.first_order:FirstOrderValuation"
    assert get_valuation("shed").__name__ == "ShedRemoval"
    with pytest.raises(ShedkitError, match="did you mean 'first-order'"):
        get_valuation("first_ordr")


def test_registry_does_not_import_first_order_until_asked():
    import subprocess

    code = (
        "import sys, shedkit.value, shedkit.value.registry as r; "
        "r.get_valuation('mc'); print('shedkit.value.first_order' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
