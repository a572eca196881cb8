"""CachedUtility: keyed by sorted ids + settings hash, one JSON file per evaluation, counts."""

import json
import pickle

import pytest

from shedkit.errors import ShedkitError
from shedkit.execute import Job, hash_settings
from shedkit.value import AdditiveGame, CachedUtility, ScoreFunction


class CountingScore:
    """A score function that counts its calls (a stand-in for a fine-tune)."""

    def __init__(self, game):
        self.game, self.calls = game, 0

    def __call__(self, ids):
        self.calls += 1
        return self.game(ids)


GAME = AdditiveGame({"rec-a": 1.0, "rec-b": 2.0, "rec-c": -0.5}, base=10.0)


def test_empty_set_is_the_real_base_score(tmp_path):
    util = CachedUtility(CountingScore(GAME), tmp_path, "h1")
    assert util(()) == 10.0


def test_key_is_the_sorted_ids_and_the_settings_hash(tmp_path):
    score = CountingScore(GAME)
    util = CachedUtility(score, tmp_path, "h1")
    assert util(["rec-b", "rec-a"]) == util(["rec-a", "rec-b"]) == 13.0
    assert score.calls == 1 and util.computed == 1 and util.reused == 1
    other = CachedUtility(score, tmp_path, "h2")  # a changed setting is a new evaluation
    other(["rec-a", "rec-b"])
    assert score.calls == 2
    assert Job.of(["b", "a"], "h").key == Job.of(["a", "b"], "h").key != Job.of(["a", "b"], "g").key


def test_disk_cache_is_reused_across_instances_and_is_json(tmp_path):
    first = CachedUtility(CountingScore(GAME), tmp_path, "h1")
    first.evaluate_many([(), ("rec-a",), ("rec-a", "rec-c")])
    files = sorted(tmp_path.rglob("*.json"))
    assert len(files) == 3
    entry = json.loads(files[0].read_text())
    assert set(entry) >= {"ids", "settings_hash", "value", "seconds"}
    assert not list(tmp_path.rglob("*.tmp"))

    score = CountingScore(GAME)
    second = CachedUtility(score, tmp_path, "h1")  # a later run
    assert second.evaluate_many([("rec-a", "rec-c"), (), ("rec-b",)]) == [10.5, 10.0, 12.0]
    assert score.calls == 1
    assert second.stats()["computed"] == 1 and second.stats()["reused"] == 2


def test_duplicate_ids_and_non_finite_scores_are_errors(tmp_path):
    util = CachedUtility(lambda ids: float("nan"), tmp_path, "h")
    with pytest.raises(ValueError, match="twice"):
        util(["a", "a"])
    with pytest.raises(ShedkitError, match="finite"):
        util(["a"])
    assert not list(tmp_path.rglob("*.json"))  # nothing cached for a failed evaluation


def test_unreadable_entry_is_recomputed(tmp_path):
    util = CachedUtility(CountingScore(GAME), tmp_path, "h1")
    util(["rec-a"])
    path = util.path(util.job(["rec-a"]))
    path.write_text("{not json")
    score = CountingScore(GAME)
    again = CachedUtility(score, tmp_path, "h1")
    with pytest.warns(UserWarning, match="unreadable"):
        assert again(["rec-a"]) == 11.0
    assert score.calls == 1
    assert json.loads(path.read_text())["value"] == 11.0


def test_memory_only_cache(tmp_path):
    score = CountingScore(GAME)
    util = CachedUtility(score, None, "h1")
    util(["rec-a"]), util(["rec-a"])
    assert score.calls == 1 and util.path(util.job(["rec-a"])) is None


def test_hash_settings_is_order_insensitive_and_sensitive_to_values():
    a = hash_settings({"model": "smollm2", "lr": 1e-4, "seed": 0})
    assert a == hash_settings({"seed": 0, "lr": 1e-4, "model": "smollm2"})
    assert a != hash_settings({"model": "smollm2", "lr": 2e-4, "seed": 0})


class GameScore(ScoreFunction):
    """A score function as the lead's fine-tune would be: config in, heavy state built lazily."""

    def score(self, ids):
        game = self.state.setdefault("game", AdditiveGame(self.config["weights"], base=self.config["base"]))
        return game(ids)


def test_score_function_pickles_config_only_and_hashes_it(tmp_path):
    fn = GameScore(weights={"rec-a": 1.0, "rec-b": 2.0}, base=0.5)
    assert fn(("rec-b",)) == 2.5 and "game" in fn.state
    clone = pickle.loads(pickle.dumps(fn))
    assert clone.state == {} and clone.config == fn.config and clone(("rec-a",)) == 1.5
    assert clone.settings_hash == fn.settings_hash
    assert GameScore(weights={"rec-a": 1.0, "rec-b": 2.0}, base=0.6).settings_hash != fn.settings_hash
    util = CachedUtility(fn, tmp_path, fn.settings_hash)
    assert util(()) == 0.5
