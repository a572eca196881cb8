"""LESS's pieces at the model layer: the Adam preconditioner Γ against a real torch AdamW step,
its state saved as safetensors, the warm-up keeping it, row gradients of the per-token MEAN
loss, and the batched preconditioned statistics, target directions and centre against one
backward per row."""

import copy

import numpy as np
import pytest
import torch

from shedkit.models.config import TrainConfig
from shedkit.models.encode import encode_record
from shedkit.models.gradients import (
    AdamState, PreconditionedTargets, adam_direction, attach_lora, checkpoint_gradient_stats,
    checkpoint_preconditioned_mean, checkpoint_task_directions, dev_gradient, load_adam_state, load_lora_state,
    lora_matrices, lora_state, naive_row_gradients, row_gradient_stats, save_adam_state, warmup_checkpoints,
)
from shedkit.models.scoring import pad_id_of

CONFIG = TrainConfig(max_length=64, precision="fp32", lora_r=4, lr=1e-2, batch_size=4)


def encode(tok, records):
    return [encode_record(tok, r, 64, "auto") for r in records]


def _stepped_adamw(weight_decay: float, steps: int, seed: int = 0):
    """A 3x4 parameter and its torch AdamW after ``steps`` steps on random gradients."""
    gen = torch.Generator().manual_seed(seed)
    p = torch.nn.Parameter(torch.randn(3, 4, generator=gen, dtype=torch.float64))
    opt = torch.optim.AdamW([p], lr=0.05, betas=(0.8, 0.95), eps=1e-6, weight_decay=weight_decay, foreach=False)
    for _ in range(steps):
        p.grad = torch.randn(3, 4, generator=gen, dtype=torch.float64) * 0.3
        opt.step()
    return p, opt, gen


@pytest.mark.parametrize("weight_decay,steps", [(0.0, 3), (0.1, 1), (0.01, 7)])
def test_adam_direction_is_what_adamw_does_to_the_update(weight_decay, steps):
    p, opt, gen = _stepped_adamw(weight_decay, steps)
    st = opt.state[p]
    assert int(st["step"]) == steps
    g = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    got = adam_direction(g, st["exp_avg"].clone(), st["exp_avg_sq"].clone(), int(st["step"]), (0.8, 0.95), 1e-6)
    # by hand, Adam's formulas at step s = steps + 1 (bias-corrected)
    s = steps + 1
    m = 0.8 * st["exp_avg"] + 0.2 * g
    v = 0.95 * st["exp_avg_sq"] + 0.05 * g ** 2
    by_hand = (m / (1 - 0.8 ** s)) / ((v / (1 - 0.95 ** s)).sqrt() + 1e-6)
    torch.testing.assert_close(got, by_hand, rtol=1e-12, atol=1e-14)
    # the real step moves p by -lr * Γ(g) - lr * wd * p
    before = p.detach().clone()
    p.grad = g.clone()
    opt.step()
    torch.testing.assert_close(p.detach() - before, -0.05 * got - 0.05 * weight_decay * before, rtol=1e-9, atol=1e-12)


def test_adam_direction_broadcasts_over_rows_and_is_not_a_scaling():
    p, opt, gen = _stepped_adamw(0.0, 4)
    st = opt.state[p]
    g = torch.randn(5, 3, 4, generator=gen, dtype=torch.float64)
    batched = adam_direction(g, st["exp_avg"], st["exp_avg_sq"], 4, (0.8, 0.95), 1e-6)
    for b in range(5):
        torch.testing.assert_close(batched[b], adam_direction(g[b], st["exp_avg"], st["exp_avg_sq"], 4, (0.8, 0.95), 1e-6))
    # preconditioning is not linear in g: Γ(2g) is not 2Γ(g)
    assert not torch.allclose(adam_direction(2 * g[0], st["exp_avg"], st["exp_avg_sq"], 4, (0.8, 0.95), 1e-6),
                              2 * batched[0])


def test_adam_state_saved_as_safetensors_round_trips(tmp_path):
    gen = torch.Generator().manual_seed(2)
    state = AdamState({"a.lora_A.default": torch.randn(2, 3, generator=gen)},
                      {"a.lora_A.default": torch.rand(2, 3, generator=gen)}, step=7, lr=1.5e-3,
                      betas=(0.9, 0.99), eps=1e-7, weight_decay=0.01)
    path = tmp_path / "adam-0.safetensors"
    save_adam_state(path, state)
    assert path.read_bytes()[:8] != b"\x80\x04\x95"  # not a pickle
    back = load_adam_state(path)
    assert (back.step, back.lr, back.betas, back.eps, back.weight_decay) == (7, 1.5e-3, (0.9, 0.99), 1e-7, 0.01)
    torch.testing.assert_close(back.exp_avg["a.lora_A.default"], state.exp_avg["a.lora_A.default"], rtol=0, atol=0)
    torch.testing.assert_close(back.exp_avg_sq["a.lora_A.default"], state.exp_avg_sq["a.lora_A.default"], rtol=0, atol=0)


def test_warmup_keeps_the_optimizer_state_of_each_checkpoint(tiny, rows):
    model, tok = tiny
    config = TrainConfig(max_length=64, precision="fp32", lora_r=4, lr=1e-2, batch_size=2, epochs=2)
    lora = attach_lora(copy.deepcopy(model), config, seed=0)
    cks = warmup_checkpoints(lora, tok, rows, config, n_checkpoints=2, seed=0, progress=False)
    names = {n for n, _ in lora_matrices(lora)}
    for ck in cks:
        assert ck.adam is not None and ck.adam.step == ck.steps
        assert set(ck.adam.exp_avg) == set(ck.adam.exp_avg_sq) == names
        assert all(torch.all(v >= 0) for v in ck.adam.exp_avg_sq.values())
        assert ck.adam.betas == (0.9, 0.999) and ck.adam.weight_decay == config.weight_decay
    # linear decay over 10 steps: the next step's lr after 5 and 10 steps
    assert cks[0].adam.lr == pytest.approx(1e-2 * (1 - 5 / 10)) and cks[1].adam.lr == pytest.approx(0.0, abs=1e-12)
    assert any(not torch.equal(cks[0].adam.exp_avg[k], cks[1].adam.exp_avg[k]) for k in names)


@pytest.fixture()
def lora_model(tiny):
    model, tok = tiny
    peft_model = attach_lora(copy.deepcopy(model), CONFIG, seed=0)
    with torch.no_grad():  # B = 0 at initialisation: give it weights so every gradient is non-zero
        gen = torch.Generator().manual_seed(1)
        for p in peft_model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return peft_model, tok


def test_row_gradients_are_of_the_per_token_mean_loss(lora_model, rows):
    """A row's gradient is 1/n_tokens times the gradient of its summed token losses: long rows
    are not favoured by having more tokens (issue 23 (a))."""
    from shedkit.models.scoring import collate, target_logits

    model, tok = lora_model
    seqs, pad = encode(tok, rows), pad_id_of(tok)
    mats = lora_matrices(model)
    summed = []
    for s in seqs:
        batch = collate([s], pad, torch.device("cpu"))
        loss = torch.nn.functional.cross_entropy(target_logits(model, batch).float(), batch.targets, reduction="sum")
        summed.append(dict(zip([n for n, _ in mats], torch.autograd.grad(loss, [m.weight for _, m in mats]))))
    probe = {k: torch.randn(v.shape, generator=torch.Generator().manual_seed(3)) for k, v in summed[0].items()}
    stats = row_gradient_stats(model, seqs, probe, pad, precision="fp32", batch_size=4)
    want = [sum(float((g[k] * probe[k]).sum()) for k in g) / s.n_targets for g, s in zip(summed, seqs)]
    np.testing.assert_allclose(stats.dots, want, rtol=1e-5, atol=1e-8)
    assert len({s.n_targets for s in seqs}) > 3  # rows of many lengths


def _random_adam(model, seed: int, step: int = 6) -> AdamState:
    gen = torch.Generator().manual_seed(seed)
    mats = lora_matrices(model)
    return AdamState({n: torch.randn(m.weight.shape, generator=gen) * 1e-2 for n, m in mats},
                     {n: torch.rand(m.weight.shape, generator=gen) * 1e-4 for n, m in mats}, step=step, lr=1e-3)


def _flat(g: dict, names) -> torch.Tensor:
    return torch.cat([g[n].double().reshape(-1) for n in names])


def test_preconditioned_statistics_equal_one_backward_per_row(tiny, rows):
    """Batched (frozen prefix reused, two checkpoints): the target directions are the mean of
    each task's unit dev gradients; the centre is the mean Γ(g); every row's <Γ(g), T_k>,
    |Γ(g)|^2 and <Γ(g), centre> match one backward per row."""
    model, tok = tiny
    lora = attach_lora(copy.deepcopy(model), CONFIG, last_layers=1, seed=0)
    names = [n for n, _ in lora_matrices(lora)]
    seqs, pad = encode(tok, rows), pad_id_of(tok)
    tasks = [seqs[:2], seqs[2:5]]
    gen = torch.Generator().manual_seed(7)
    states = [{k: torch.randn(v.shape, generator=gen) * 0.1 for k, v in lora_state(lora).items()} for _ in range(2)]
    adams = [_random_adam(lora, 10), _random_adam(lora, 11, step=2)]
    targets = checkpoint_task_directions(lora, tasks, states, pad, precision="fp32", batch_size=3)
    centers = checkpoint_preconditioned_mean(lora, seqs, states, adams, pad, precision="fp32", batch_size=3)
    devs = []
    for st in states:
        load_lora_state(lora, st)
        devs.append(dev_gradient(lora, seqs[:3], pad, precision="fp32"))
    pre = [PreconditionedTargets(a, d, c) for a, d, c in zip(adams, targets, centers)]
    got = checkpoint_gradient_stats(lora, seqs, list(zip(states, devs)), pad, precision="fp32", batch_size=3,
                                    preconditioned=pre)
    assert got.pre_dots.shape == (2, len(rows), 2)
    for t, (st, adam) in enumerate(zip(states, adams)):
        load_lora_state(lora, st)
        naive = naive_row_gradients(lora, seqs, pad)
        flat = torch.stack([_flat(g, names) for g in naive])
        # target directions: per task the mean of unit plain gradients (no preconditioning)
        for k, idx in enumerate([range(0, 2), range(2, 5)]):
            unit = flat[list(idx)] / flat[list(idx)].norm(dim=1, keepdim=True)
            want_t = unit.mean(0)
            torch.testing.assert_close(torch.cat([targets[t][n][k].double().reshape(-1) for n in names]), want_t,
                                       rtol=1e-4, atol=1e-7)
        u = torch.stack([_flat({n: adam.direction(n, g[n].float()) for n in names}, names) for g in naive])
        mu = u.mean(0)
        torch.testing.assert_close(_flat(centers[t], names), mu, rtol=1e-4, atol=1e-6)
        T = torch.stack([torch.cat([targets[t][n][k].double().reshape(-1) for n in names]) for k in range(2)])
        np.testing.assert_allclose(got.pre_dots[t], (u @ T.T).numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(got.pre_norms2[t], (u ** 2).sum(1).numpy(), rtol=1e-4)
        np.testing.assert_allclose(got.pre_center_dots[t], (u @ mu).numpy(), rtol=1e-4, atol=1e-6)
    # the plain statistics are unchanged by asking for the preconditioned ones
    plain = checkpoint_gradient_stats(lora, seqs, list(zip(states, devs)), pad, precision="fp32", batch_size=3)
    np.testing.assert_array_equal(plain.dots, got.dots)
    np.testing.assert_array_equal(plain.norms2, got.norms2)
    assert plain.pre_dots is None


def test_target_directions_ignore_each_dev_rows_scale(tiny, rows):
    """Each dev row's gradient is unit-normalised: a task of one row has a unit target."""
    model, tok = tiny
    lora = attach_lora(copy.deepcopy(model), CONFIG, seed=0)
    seqs, pad = encode(tok, rows), pad_id_of(tok)
    gen = torch.Generator().manual_seed(8)
    state = {k: torch.randn(v.shape, generator=gen) * 0.1 for k, v in lora_state(lora).items()}
    out = checkpoint_task_directions(lora, [[s] for s in seqs[:4]], [state], pad, precision="fp32")
    norms = torch.sqrt(sum((v.double() ** 2).sum(dim=(1, 2)) for v in out[0].values()))
    torch.testing.assert_close(norms, torch.ones(4, dtype=torch.float64), rtol=1e-5, atol=1e-6)
