"""Per-example LoRA gradients: batched inner products and norms against one backward per row,
the count-sketch projection against the Johnson-Lindenstrauss bound, the warm-up checkpoints."""

import numpy as np
import pytest
import torch

from shedkit.models.config import TrainConfig
from shedkit.models.encode import encode_record
from shedkit.models.gradients import (
    CountSketch, attach_lora, dev_gradient, lora_matrices, naive_row_gradients, row_gradient_stats,
    warmup_checkpoints,
)
from shedkit.models.scoring import pad_id_of

CONFIG = TrainConfig(max_length=64, precision="fp32", lora_r=4, lr=1e-2, batch_size=4)


@pytest.fixture()
def lora_model(tiny):
    import copy

    model, tok = tiny
    peft_model = attach_lora(copy.deepcopy(model), CONFIG, seed=0)
    with torch.no_grad():  # B = 0 at initialisation: give it weights so every gradient is non-zero
        gen = torch.Generator().manual_seed(1)
        for p in peft_model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return peft_model, tok


def encode(tok, records):
    return [encode_record(tok, r, 64, "auto") for r in records]


def test_batched_values_equal_one_backward_per_row(lora_model, rows):
    model, tok = lora_model
    seqs, dev_seqs = encode(tok, rows), encode(tok, rows[:3])
    pad = pad_id_of(tok)
    dev = dev_gradient(model, dev_seqs, pad, precision="fp32")
    stats = row_gradient_stats(model, seqs, dev, pad, precision="fp32", batch_size=4)
    naive = naive_row_gradients(model, seqs, pad)
    # the dev gradient: the token-weighted mean loss, summed by hand from per-row sums
    n_tok = sum(s.n_targets for s in dev_seqs)
    by_hand = {k: sum(g[k] * s.n_targets for g, s in zip(naive_row_gradients(model, dev_seqs, pad), dev_seqs)) / n_tok
               for k in dev}
    for k in dev:
        torch.testing.assert_close(dev[k], by_hand[k], rtol=0, atol=1e-6)
    want_dots = [sum(float((g[k] * dev[k]).sum()) for k in g) for g in naive]
    want_sq = [sum(float((g[k] ** 2).sum()) for k in g) for g in naive]
    np.testing.assert_allclose(stats.dots, want_dots, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stats.norms2, want_sq, rtol=1e-5, atol=1e-7)
    assert stats.computed == len(rows) and np.all(stats.norms2 > 0)
    # batching does not matter
    one = row_gradient_stats(model, seqs, dev, pad, precision="fp32", batch_size=1)
    np.testing.assert_allclose(one.dots, stats.dots, rtol=1e-5, atol=1e-8)


def test_last_layers_only_adapts_those_layers(tiny):
    import copy

    model, _ = tiny
    peft_model = attach_lora(copy.deepcopy(model), CONFIG, last_layers=1)
    names = [n for n, _ in lora_matrices(peft_model)]
    assert names and all(".layers.1." in n for n in names)


def test_projection_within_the_jl_bound_and_seeded(lora_model, rows):
    model, tok = lora_model
    seqs = encode(tok, rows)
    pad = pad_id_of(tok)
    grads = naive_row_gradients(model, seqs, pad)
    shapes = [(k, tuple(v.shape)) for k, v in grads[0].items()]
    dim = 512
    sketch = CountSketch(shapes, dim, seed=3)
    feats = torch.stack([sketch.project(g) for g in grads]).double()
    flat = torch.stack([torch.cat([g[k].reshape(-1) for k, _ in shapes]) for g in grads]).double()
    exact, approx = flat @ flat.T, feats @ feats.T
    norms = flat.norm(dim=1)
    bound = 4 * np.sqrt(2 / dim) * torch.outer(norms, norms)  # 4 standard deviations of a sparse JL map
    assert torch.all((approx - exact).abs() <= bound)
    # the batched projection is the same map
    dev = {k: torch.zeros_like(v) for k, v in grads[0].items()}
    stats = row_gradient_stats(model, seqs, dev, pad, precision="fp32", sketch=CountSketch(shapes, dim, seed=3))
    np.testing.assert_allclose(stats.features, feats.float().numpy(), rtol=1e-4, atol=1e-6)
    again = torch.stack([CountSketch(shapes, dim, seed=3).project(g) for g in grads[:2]])
    other = torch.stack([CountSketch(shapes, dim, seed=4).project(g) for g in grads[:2]])
    assert torch.equal(again, feats[:2].float()) and not torch.allclose(other, again)


def test_warmup_checkpoints_learning_rates_and_states(tiny, rows):
    import copy

    model, tok = tiny
    config = TrainConfig(max_length=64, precision="fp32", lora_r=4, lr=1e-2, batch_size=2, epochs=2)
    peft_model = attach_lora(copy.deepcopy(model), config, seed=0)
    cks = warmup_checkpoints(peft_model, tok, rows, config, n_checkpoints=2, seed=0, progress=False)
    assert [c.steps for c in cks] == [5, 10]
    # linear decay from lr over 10 steps: the mean of (1 - k/10) * lr over each half
    assert cks[0].lr == pytest.approx(1e-2 * np.mean([1 - k / 10 for k in range(5)]))
    assert cks[1].lr == pytest.approx(1e-2 * np.mean([1 - k / 10 for k in range(5, 10)]))
    a, b = cks
    assert any(not torch.equal(a.state[k], b.state[k]) for k in a.state)


def test_checkpoints_with_a_reused_frozen_prefix_equal_one_pass_each(tiny, rows):
    import copy

    from shedkit.models.gradients import FrozenPrefix, checkpoint_gradient_stats, load_lora_state, lora_state

    model, tok = tiny
    lora = attach_lora(copy.deepcopy(model), CONFIG, last_layers=1, seed=0)
    assert FrozenPrefix.of(lora, lora_matrices(lora)).first == 1
    seqs, pad = encode(tok, rows), pad_id_of(tok)
    gen = torch.Generator().manual_seed(5)
    states = []
    for _ in range(2):
        states.append({k: torch.randn(v.shape, generator=gen) * 0.1 for k, v in lora_state(lora).items()})
    devs, want = [], []
    for st in states:
        load_lora_state(lora, st)
        devs.append(dev_gradient(lora, seqs[:3], pad, precision="fp32"))
        want.append(row_gradient_stats(lora, seqs, devs[-1], pad, precision="fp32", batch_size=3))
    got = checkpoint_gradient_stats(lora, seqs, list(zip(states, devs)), pad, precision="fp32", batch_size=3)
    for t in range(2):
        np.testing.assert_allclose(got.dots[t], want[t].dots, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(got.norms2[t], want[t].norms2, rtol=1e-6, atol=1e-9)
    assert got.computed == 2 * len(rows)
    # the decoder is whole again afterwards
    assert all(type(layer).__name__ != "_Skip" for layer in lora.get_base_model().model.layers)


def test_dev_gradients_at_checkpoints_with_a_reused_prefix(tiny, rows):
    import copy

    from shedkit.models.gradients import checkpoint_dev_gradients, load_lora_state, lora_state

    model, tok = tiny
    lora = attach_lora(copy.deepcopy(model), CONFIG, last_layers=1, seed=0)
    seqs, pad = encode(tok, rows), pad_id_of(tok)
    gen = torch.Generator().manual_seed(6)
    states = [{k: torch.randn(v.shape, generator=gen) * 0.1 for k, v in lora_state(lora).items()} for _ in range(2)]
    got = checkpoint_dev_gradients(lora, seqs, states, pad, precision="fp32", batch_size=3)
    for st, g in zip(states, got):
        load_lora_state(lora, st)
        want = dev_gradient(lora, seqs, pad, precision="fp32", batch_size=3)
        for k in want:
            torch.testing.assert_close(g[k], want[k], rtol=1e-5, atol=1e-7)


def test_a_frozen_weights_copy_shares_storage_and_keeps_the_original_intact(tiny, rows):
    from shedkit.models.gradients import frozen_weights_copy
    from shedkit.models.scoring import collate, target_logits

    model, tok = tiny
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    flags = [p.requires_grad for p in model.parameters()]
    twin = frozen_weights_copy(model)
    pairs = list(zip(model.parameters(), twin.parameters()))
    assert len(pairs) == len(list(model.parameters()))  # tied weights stay tied (same count)
    assert all(a is not b and a.data_ptr() == b.data_ptr() for a, b in pairs)  # no weight copied
    lora = attach_lora(twin, CONFIG, seed=0)  # freezes the copy's base weights, not the original's
    assert [p.requires_grad for p in model.parameters()] == flags
    assert not any(type(m).__name__.startswith("Lora") for m in model.modules())
    opt = torch.optim.SGD([p for p in lora.parameters() if p.requires_grad], lr=0.5)
    batch = collate(encode(tok, rows[:4]), pad_id_of(tok), "cpu")
    for _ in range(2):
        torch.nn.functional.cross_entropy(target_logits(lora, batch), batch.targets).backward()
        opt.step()
        opt.zero_grad()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), before[n], rtol=0, atol=0)
