import pickle

import pytest
import torch

from shedkit.models import ScoreConfig, TrainConfig, config_hash, evaluate, finetune_and_score, shared_model
from shedkit.models.objectives import MCItem, Objective
from shedkit.models.value_fn import SubsetScore, finetune_and_score_details

TC = TrainConfig(epochs=2, batch_size=4, lr=1e-2, lora_r=4, lora_alpha=8, precision="fp32")
OBJ = Objective("loss", score=ScoreConfig(precision="fp32"))


def test_empty_train_set_is_the_base_score(rows):
    base, tok = shared_model("tiny-random")
    assert finetune_and_score("tiny-random", [], rows[:4], TC, OBJ, 0) == evaluate(base, tok, rows[:4], OBJ).score


def test_same_seed_same_score_and_base_restored(rows):
    train, dev = rows[:6], rows[6:]
    base, _ = shared_model("tiny-random")
    before = {k: v.clone() for k, v in base.state_dict().items()}
    a = finetune_and_score("tiny-random", train, dev, TC, OBJ, seed=0)
    b = finetune_and_score("tiny-random", list(reversed(train)), dev, TC, OBJ, seed=0)  # a set: order is irrelevant
    c = finetune_and_score("tiny-random", train, dev, TC, OBJ, seed=1)
    v0 = finetune_and_score("tiny-random", [], dev, TC, OBJ, seed=0)
    assert a == b and a != c and a != v0
    after = base.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_details_carry_train_stats(rows):
    res = finetune_and_score_details("tiny-random", rows[:3], rows[3:5], TC, OBJ, seed=0)
    assert res.metrics["train"]["steps"] == 2 and res.metrics["loss"] == pytest.approx(-res.score)


def test_mc_objective_runs_end_to_end(rows):
    items = [MCItem("Question: a?", ("yes", "no"), 0), MCItem("Question: b?", ("x", "yy"), 1)]
    score = finetune_and_score("tiny-random", rows[:3], items, TC, "auto", 0)
    assert score in (0.0, 0.5, 1.0)


def test_config_hash_is_stable_and_sensitive(rows):
    dev = rows[6:]
    h = config_hash("tiny-random", TC, OBJ, dev, 0)
    assert h == config_hash("tiny-random", TrainConfig(**TC.to_dict()), Objective("loss", score=ScoreConfig(precision="fp32")), list(dev), 0)
    changed = [
        config_hash("some/other-model", TC, OBJ, dev, 0),
        config_hash("tiny-random", TrainConfig(**{**TC.to_dict(), "lr": 2e-2}), OBJ, dev, 0),
        config_hash("tiny-random", TC, Objective("loss", score=ScoreConfig(precision="fp32", max_length=64)), dev, 0),
        config_hash("tiny-random", TC, OBJ, dev[:-1], 0),
        config_hash("tiny-random", TC, OBJ, dev, 1),
    ]
    assert len({h, *changed}) == len(changed) + 1


def test_subset_score_is_picklable_and_keyed_by_id(rows):
    fn = SubsetScore("tiny-random", rows[:6], rows[6:], TC, OBJ, seed=0)
    clone = pickle.loads(pickle.dumps(fn))
    ids = [rows[2].id, rows[0].id]
    assert clone(ids) == fn(list(reversed(ids))) == finetune_and_score("tiny-random", [rows[0], rows[2]], rows[6:], TC, OBJ, 0)
    assert fn.settings_hash == config_hash("tiny-random", TC, OBJ, rows[6:], 0)  # a property, as ScoreFunction's
    with pytest.raises(Exception, match="not in the pool"):
        fn(["nope"])


def test_cache_key_ignores_batch_sizes_which_do_not_change_scores(rows):
    """Scoring batch sizes group rows into forward passes only: same key, same score."""
    dev = rows[6:]
    small = Objective("loss", score=ScoreConfig(precision="fp32", batch_size=1, max_batch_tokens=64))
    big = Objective("loss", score=ScoreConfig(precision="fp32", batch_size=32, max_batch_tokens=100_000))
    assert config_hash("tiny-random", TC, small, dev, 0) == config_hash("tiny-random", TC, big, dev, 0)
    a = finetune_and_score("tiny-random", rows[:3], dev, TC, small, 0)
    b = finetune_and_score("tiny-random", rows[:3], dev, TC, big, 0)
    assert a == pytest.approx(b, rel=1e-5)


def test_cache_key_names_library_versions_and_the_hub_revision(rows, monkeypatch, tmp_path):
    import huggingface_hub.constants

    from shedkit.models import config as config_mod

    dev = rows[6:]
    h = config_hash("tiny-random", TC, OBJ, dev, 0)
    for lib in ("torch", "transformers", "peft"):
        real = config_mod.library_versions()
        monkeypatch.setattr(config_mod, "library_versions", lambda lib=lib, real=real: {**real, lib: "0.0.1"})
        assert config_hash("tiny-random", TC, OBJ, dev, 0) != h, lib
        monkeypatch.undo()
    assert config_hash("tiny-random", TC, OBJ, dev, 0) == h
    # a hub model is keyed by the commit its id resolves to in the local HF cache
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ref = tmp_path / "models--org--model" / "refs" / "main"
    ref.parent.mkdir(parents=True)
    ref.write_text("a" * 40)
    first = config_hash("org/model", TC, OBJ, dev, 0)
    assert config_mod.hub_revision("org/model") == "a" * 40
    ref.write_text("b" * 40)
    assert config_hash("org/model", TC, OBJ, dev, 0) != first
