"""A killed fine-tune resumes from its last checkpoint and ends with the same weights."""

import json

import pytest
import torch

from shedkit.models import TrainConfig
from shedkit.models.finetune import finetune

# dropout on, so the resumed run must also restore the RNG to match
CFG = TrainConfig(epochs=3, batch_size=2, lr=2e-2, lora_r=4, lora_alpha=8, lora_dropout=0.1, precision="fp32",
                  warmup_ratio=0.2, scheduler="cosine")


class Killed(Exception):
    pass


def kill_at(step):
    def on_step(n):
        if n == step:
            raise Killed(f"killed after step {n}")

    return on_step


def trained(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("method", ["lora", "full"])
def test_killed_run_resumes_and_matches_an_uninterrupted_one(tiny, rows, tmp_path, method):
    model, tok = tiny
    cfg = TrainConfig(**{**CFG.to_dict(), "method": method, "lr": CFG.lr if method == "lora" else 1e-3})
    whole = finetune(model, tok, rows, cfg, seed=3, progress=False)
    assert whole.stats.steps == 15
    ckpt = tmp_path / "ckpt"
    with pytest.raises(Killed):
        finetune(model, tok, rows, cfg, seed=3, progress=False, checkpoint_dir=ckpt, checkpoint_every=4,
                 on_step=kill_at(10))
    latest = json.loads((ckpt / "latest.json").read_text())
    assert latest["step"] == 8 and sorted(p.name for p in ckpt.iterdir()) == ["latest.json", "step-00000008"]
    resumed = finetune(model, tok, rows, cfg, seed=3, progress=False, checkpoint_dir=ckpt, checkpoint_every=4)
    assert resumed.stats.resumed_from_step == 8 and resumed.stats.step_losses == whole.stats.step_losses
    a, b = trained(whole.model), trained(resumed.model)
    assert a.keys() == b.keys()
    # tolerance: none. Same machine, fp32, restored optimiser/scheduler/RNG state: bitwise equal
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_of_another_run_is_ignored(tiny, rows, tmp_path):
    model, tok = tiny
    ckpt = tmp_path / "ckpt"
    with pytest.raises(Killed):
        finetune(model, tok, rows, CFG, seed=3, progress=False, checkpoint_dir=ckpt, checkpoint_every=2,
                 on_step=kill_at(3))
    other = finetune(model, tok, rows, CFG, seed=4, progress=False, checkpoint_dir=ckpt, checkpoint_every=2)
    assert other.stats.resumed_from_step == 0  # another seed: another run
