import numpy as np
import pytest
import torch

from shedkit.errors import ShedkitError
from shedkit.models import ScoreConfig, TrainConfig, field_help, load_model, response_losses
from shedkit.models.finetune import finetune, finetuned, save_finetuned

from helpers import rec

FAST = TrainConfig(epochs=4, batch_size=4, lr=2e-2, lora_r=4, lora_alpha=8, precision="fp32")


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lora_changes_adapter_weights_lowers_loss_and_keeps_base(tiny, rows):
    model, tok = tiny
    before = state(model)
    res = finetune(model, tok, rows, FAST, seed=0, progress=False)
    assert same(state(model), before)  # the caller's base is untouched
    assert res.stats.steps == 4 * 3 and len(res.stats.step_losses) == 12
    assert np.mean(res.stats.step_losses[-3:]) < np.mean(res.stats.step_losses[:3])
    lora_b = [p for n, p in res.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: it moved
    cfg = ScoreConfig(precision="fp32")
    assert response_losses(res.model, tok, rows, cfg, progress=False).loss.mean() < \
        response_losses(model, tok, rows, cfg, progress=False).loss.mean()


def test_full_finetune_changes_base_weights_of_a_copy(tiny, rows):
    model, tok = tiny
    before = state(model)
    res = finetune(model, tok, rows[:4], TrainConfig(method="full", epochs=1, batch_size=4, lr=1e-3, precision="fp32"), progress=False)
    assert same(state(model), before)
    after = state(res.model)
    assert any(not torch.equal(after[k], before[k]) for k in before)
    assert res.stats.trainable_params == sum(p.numel() for p in model.parameters())


def test_same_seed_bitwise_same_other_seed_differs(tiny, rows):
    model, tok = tiny
    cfg = TrainConfig(**{**FAST.to_dict(), "lora_dropout": 0.1})  # dropout draws from the seeded RNG too
    a = finetune(model, tok, rows, cfg, seed=1, progress=False)
    b = finetune(model, tok, rows, cfg, seed=1, progress=False)
    c = finetune(model, tok, rows, cfg, seed=2, progress=False)
    assert a.stats.step_losses == b.stats.step_losses
    assert same(state(a.model), state(b.model))
    assert not same(state(a.model), state(c.model))


def test_finetuned_context_restores_the_shared_base(tiny, rows):
    model, tok = tiny
    before = state(model)
    names = [n for n, _ in model.named_modules()]
    flags = [p.requires_grad for p in model.parameters()]
    with finetuned(model, tok, rows, FAST, seed=1) as ft:
        inside = response_losses(ft.model, tok, rows, ScoreConfig(precision="fp32"), progress=False).loss
    assert same(state(model), before)
    assert [n for n, _ in model.named_modules()] == names
    assert [p.requires_grad for p in model.parameters()] == flags
    # and it is the same fine-tune as the copying path
    ref = finetune(model, tok, rows, FAST, seed=1, progress=False)
    np.testing.assert_array_equal(inside, response_losses(ref.model, tok, rows, ScoreConfig(precision="fp32"), progress=False).loss)


def test_finetuned_restores_base_after_an_error(tiny, rows):
    model, tok = tiny
    before = state(model)
    with pytest.raises(RuntimeError, match="boom"):
        with finetuned(model, tok, rows[:2], FAST):
            raise RuntimeError("boom")
    assert same(state(model), before)
    assert not any("lora" in n for n, _ in model.named_modules())


def test_empty_rows_are_skipped_and_all_empty_is_an_error(tiny, rows):
    model, tok = tiny
    empty = rec(50, ("user", "x"), ("assistant", ""))
    res = finetune(model, tok, rows[:2] + [empty], FAST, progress=False)
    assert res.stats.skipped == [empty.id] and res.stats.rows == 2
    assert all(np.isfinite(res.stats.step_losses))
    with pytest.raises(ShedkitError, match="empty response"):
        finetune(model, tok, [empty], FAST, progress=False)


def test_fractional_epochs_and_grad_accum(tiny, rows):
    model, tok = tiny
    res = finetune(model, tok, rows, TrainConfig(epochs=0.5, batch_size=2, grad_accum=2, precision="fp32"), progress=False)
    assert res.stats.rows == 10 and res.stats.steps == 2  # 5 rows -> 3 micro-batches -> 2 steps


def test_save_adapter_and_merged_then_load_back(tiny, rows, tmp_path):
    model, tok = tiny
    res = finetune("tiny-random", None, rows, FAST, seed=3, progress=False)
    assert res.base_model == "tiny-random"
    cfg = ScoreConfig(precision="fp32")
    expected = response_losses(res.model, tok, rows, cfg, progress=False).loss
    adapter = save_finetuned(res, tmp_path / "adapter")
    assert (adapter / "adapter_model.safetensors").exists() and (adapter / "shedkit_train.json").exists()
    merged = save_finetuned(res, tmp_path / "merged", merged=True)
    assert (merged / "model.safetensors").exists()
    for path in (adapter, merged):
        m, t = load_model(str(path))
        np.testing.assert_allclose(response_losses(m, t, rows, cfg, progress=False).loss, expected, atol=1e-4)
    with pytest.raises(ShedkitError, match="already exists"):
        save_finetuned(res, adapter)


def test_train_config_validates_and_documents_every_field():
    with pytest.raises(ShedkitError, match="method"):
        TrainConfig(method="qlora")
    with pytest.raises(ShedkitError, match="unknown training option"):
        TrainConfig.from_dict({"lr": 1e-4, "epoch": 2})
    assert TrainConfig.from_dict({"lr": 1e-4}).lr == 1e-4
    assert all(help_ for _, _, help_ in field_help(TrainConfig))
    assert TrainConfig(target_modules="q_proj, v_proj").lora_targets() == ["q_proj", "v_proj"]
