"""FirstOrderValuation on the tiny model: values = Σ_t η_t <g_dev, g_z> computed by hand (one
backward per row), cosine form, cache (a rerun computes no gradient), resume after a kill."""

import copy

import numpy as np
import pytest
import torch

from shedkit.models.config import TrainConfig
from shedkit.value.first_order import FirstOrderValuation
from shedkit.value.registry import get_valuation

CONFIG = TrainConfig(max_length=64, precision="fp32", lora_r=4, lr=5e-2, batch_size=2, epochs=2)


def valuation(tmp_path, **kw):
    args = dict(model="tiny-random", train_config=CONFIG, warmup_rows=4, checkpoints=2, cache_dir=tmp_path / "cache",
                batch_size=3, progress=False, seed=0)
    args.update(kw)
    return FirstOrderValuation(**args)


def test_registry_names_the_class():
    assert get_valuation("first-order") is FirstOrderValuation


def test_values_equal_the_naive_sum_over_checkpoints(tmp_path, tiny, rows):
    from safetensors.torch import load_file

    from shedkit.models.encode import encode_record
    from shedkit.models.gradients import attach_lora, load_lora_state, naive_row_gradients
    from shedkit.models.scoring import pad_id_of

    dev = rows[:3]
    fit = valuation(tmp_path).fit(rows, dev)
    assert fit.stats_["row_gradients_computed"] == 2 * len(rows) and fit.stats_["warmup"] == "trained"
    model, tok = tiny
    lora = attach_lora(copy.deepcopy(model), CONFIG, seed=0)
    meta = fit.stats_["cache_dir"]
    import json
    from pathlib import Path

    lrs = json.loads((Path(meta) / "checkpoints.json").read_text())["lr"]
    seqs = [encode_record(tok, r, 64, "auto") for r in rows]
    dev_seqs = [encode_record(tok, r, 64, "auto") for r in dev]
    raw, cos = np.zeros(len(rows)), np.zeros(len(rows))
    for t, lr in enumerate(lrs):
        load_lora_state(lora, load_file(str(Path(meta) / f"checkpoint-{t}.safetensors")))
        grads = naive_row_gradients(lora, seqs, pad_id_of(tok))
        dgrads = naive_row_gradients(lora, dev_seqs, pad_id_of(tok))
        n_tok = sum(s.n_targets for s in dev_seqs)
        g_dev = {k: sum(g[k] * s.n_targets for g, s in zip(dgrads, dev_seqs)) / n_tok for k in dgrads[0]}
        dev_norm = np.sqrt(sum(float((v.double() ** 2).sum()) for v in g_dev.values()))
        for i, g in enumerate(grads):
            dot = sum(float((g[k].double() * g_dev[k].double()).sum()) for k in g)
            norm = np.sqrt(sum(float((g[k].double() ** 2).sum()) for k in g))
            raw[i] += lr * dot
            cos[i] += lr * dot / (norm * dev_norm)
    np.testing.assert_allclose(fit.raw_, raw, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(fit.cosine_, cos, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(fit.result_.values, fit.raw_)
    assert list(fit.result_.players) == [r.id for r in rows]
    cosine = valuation(tmp_path, normalize="cosine").fit(rows, dev)
    np.testing.assert_allclose(cosine.result_.values, cos, rtol=1e-5, atol=1e-7)
    # the same cache: the second fit computed nothing
    assert cosine.stats_["row_gradients_computed"] == 0 and cosine.stats_["warmup"] == "cached"
    assert cosine.stats_["row_gradients_cached"] == 2 * len(rows)


def test_rerun_computes_nothing_and_a_killed_run_resumes(tmp_path, rows, monkeypatch):
    import shedkit.models.gradients as grads

    dev = rows[:2]
    calls = {"n": 0}
    real = grads.checkpoint_gradient_stats

    def dies_on_third_chunk(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(grads, "checkpoint_gradient_stats", dies_on_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        valuation(tmp_path, chunk_rows=3).fit(rows, dev)  # chunks of 3, 3 rows, then killed
    monkeypatch.setattr(grads, "checkpoint_gradient_stats", real)
    resumed = valuation(tmp_path, chunk_rows=3).fit(rows, dev)
    assert resumed.stats_["warmup"] == "cached"
    assert resumed.stats_["row_gradients_computed"] == 2 * (len(rows) - 6)  # 4 rows x 2 checkpoints
    fresh = valuation(tmp_path / "other", chunk_rows=3).fit(rows, dev)
    np.testing.assert_allclose(resumed.result_.values, fresh.result_.values, rtol=1e-6, atol=1e-12)

    def no_gradients(*a, **k):
        raise AssertionError("a gradient was computed again")

    monkeypatch.setattr(grads, "checkpoint_gradient_stats", no_gradients)
    monkeypatch.setattr(grads, "warmup_checkpoints", no_gradients)
    again = valuation(tmp_path, chunk_rows=3).fit(rows, dev)
    assert again.stats_["row_gradients_computed"] == 0
    np.testing.assert_array_equal(again.result_.values, resumed.result_.values)


def test_projected_features_are_cached_and_seeded(tmp_path, rows):
    dev = rows[:2]
    a = valuation(tmp_path, projection_dim=64).fit(rows, dev)
    assert a.features_.shape == (2, len(rows), 64) and np.all(np.isfinite(a.features_))
    b = valuation(tmp_path, projection_dim=64).fit(rows, dev)
    assert b.stats_["row_gradients_computed"] == 0
    np.testing.assert_array_equal(a.features_, b.features_)
    c = valuation(tmp_path, projection_dim=64, seed=1).fit(rows, dev)
    assert not np.allclose(c.features_, a.features_)


def test_empty_response_rows_get_nan(tmp_path, rows):
    from shedkit.data.records import Turn, make_record

    empty = make_record(99, [Turn("user", "Hi?"), Turn("assistant", " ")], {"i": 99})
    fit = valuation(tmp_path).fit([*rows, empty], rows[:2])
    assert np.isnan(fit.raw_[-1]) and np.all(np.isfinite(fit.raw_[:-1]))
