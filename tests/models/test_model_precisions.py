"""The precision-sensitive paths (scoring, multiple choice, per-row losses, fine-tuning) under
both precisions, on any CPU: bf16 autocast is run whether or not this CPU has fast bf16, and
"auto" is checked on both kinds of CPU (simulated) to give exactly what it resolves to."""

import numpy as np
import pytest

from shedkit.models import ScoreConfig, TrainConfig, response_losses
from shedkit.models import device as device_mod
from shedkit.models.finetune import finetune
from shedkit.models.objectives import MCItem, Objective, evaluate, mc_accuracy

ITEMS = [MCItem("Question: one?", ("yes", "no"), 0), MCItem("Question: two?", ("a b", "c"), 1)]


def run_paths(model, tok, rows, precision):
    """Every number a precision changes, computed under ``precision``."""
    score = ScoreConfig(precision=precision)
    loss = evaluate(model, tok, rows, Objective("loss", score=score)).metrics["loss"]
    mc = mc_accuracy(model, tok, ITEMS, score)["loglikelihoods"]
    per_row = response_losses(model, tok, rows, score, progress=False).loss
    train = TrainConfig(epochs=1, batch_size=4, lr=1e-2, lora_r=4, lora_alpha=8, precision=precision)
    ft = finetune(model, tok, rows, train, seed=0, progress=False)
    return {"loss": loss, "mc": np.concatenate([np.asarray(x) for x in mc]), "per_row": np.asarray(per_row),
            "steps": np.asarray(ft.stats.step_losses), "ran": ft.stats.precision}


@pytest.fixture(scope="module")
def both(tiny, rows):
    model, tok = tiny
    return {p: run_paths(model, tok, rows, p) for p in ("fp32", "bf16")}


def test_both_precisions_run_and_agree_within_bf16_rounding(both):
    fp32, bf16 = both["fp32"], both["bf16"]
    assert fp32["ran"] == "fp32" and bf16["ran"] == "bf16"
    for key in ("loss", "mc", "per_row", "steps"):
        assert np.all(np.isfinite(bf16[key]))
        # bf16 keeps 8 bits of mantissa: per-token log-probs move by ~1e-2 relative, not more
        np.testing.assert_allclose(bf16[key], fp32[key], rtol=3e-2, atol=3e-2, err_msg=key)
    assert not np.array_equal(bf16["per_row"], fp32["per_row"])  # bf16 really ran


@pytest.mark.parametrize("fast_bf16, resolves_to", [(True, "bf16"), (False, "fp32")])
def test_auto_gives_exactly_what_it_resolves_to_on_either_cpu(tiny, rows, both, monkeypatch, fast_bf16, resolves_to):
    monkeypatch.setattr(device_mod, "cpu_has_fast_bf16", lambda: fast_bf16)
    assert device_mod.resolve_precision("auto", "cpu") == resolves_to
    model, tok = tiny
    auto = run_paths(model, tok, rows, "auto")
    assert auto["ran"] == resolves_to
    for key in ("loss", "mc", "per_row", "steps"):
        assert np.array_equal(np.asarray(auto[key]), np.asarray(both[resolves_to][key])), key
