"""Fine-tune checkpoints: what a killed fine-tune needs to resume and end with the same weights.

A checkpoint after optimiser step ``n`` is a directory ``step-<n>`` holding
- ``trainable.safetensors``: every trainable tensor (the LoRA adapters, or all weights for a
  full fine-tune), by parameter name;
- ``state.pt``: optimiser and LR-scheduler state, the torch RNG states, and the run's
  step losses and token count (read back with ``torch.load(weights_only=True)``: tensors and
  plain containers only, never arbitrary pickled objects);
- ``meta.json``: the step and the fingerprint of the run (train config, seed, rows).
It is written to a temporary directory and renamed, then ``latest.json`` (atomic) points at
it and the older step directories are removed: a kill at any moment leaves either the
previous checkpoint or the new one, whole. The row order of every step is a function of the
seed, so a resumed run skips the finished steps and continues exactly where it stopped.
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

LATEST = "latest.json"


@dataclass(frozen=True)
class CheckpointSpec:
    """Checkpoint into ``directory`` every ``every`` optimiser steps (``every`` 0: never)."""

    directory: Path
    every: int
    fingerprint: str  # of what is trained (config, seed, rows): a checkpoint of another run is ignored


def save_checkpoint(spec: CheckpointSpec, step: int, model, opt, sched, extra: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    from shedkit.data.containers import atomic_write_json
    from shedkit.util.atomic import publish_mode

    spec.directory.mkdir(parents=True, exist_ok=True)
    final = spec.directory / f"step-{step:08d}"
    tmp = spec.directory / f".step-{step:08d}.tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        tensors = {n: p.detach().to("cpu").contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}
        save_file(tensors, str(tmp / "trainable.safetensors"))
        state = {
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            **extra,
        }
        torch.save(state, tmp / "state.pt")
        (tmp / "meta.json").write_text(json.dumps({"step": step, "fingerprint": spec.fingerprint}))
        publish_mode(tmp, tree=True)  # safetensors writes its file private (0600)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    atomic_write_json(spec.directory / LATEST, {"step": step, "path": final.name, "fingerprint": spec.fingerprint})
    for old in spec.directory.glob("step-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(spec: CheckpointSpec) -> Path | None:
    """The newest complete checkpoint of this run, or None."""
    try:
        latest = json.loads((spec.directory / LATEST).read_text())
        path = spec.directory / latest["path"]
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if latest.get("fingerprint") != spec.fingerprint or meta.get("fingerprint") != spec.fingerprint:
        return None
    if not (path / "trainable.safetensors").exists() or not (path / "state.pt").exists():
        return None
    return path


def load_checkpoint(path: Path, model, opt, sched) -> tuple[int, dict[str, Any]]:
    """Restore weights, optimiser, scheduler and RNG from ``path``; ``(step, extra state)``."""
    from safetensors.torch import load_file

    tensors = load_file(str(path / "trainable.safetensors"))
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in tensors]
    if missing or set(tensors) - set(params):
        raise ValueError(f"checkpoint {path} does not match the model (e.g. {(missing or sorted(set(tensors) - set(params)))[0]})")
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value.to(params[name].device))
    state = torch.load(path / "state.pt", weights_only=True)
    opt.load_state_dict(state.pop("optimizer"))
    sched.load_state_dict(state.pop("scheduler"))
    torch.set_rng_state(state.pop("rng_cpu"))
    cuda = state.pop("rng_cuda")
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    step = int(json.loads((path / "meta.json").read_text())["step"])
    return step, state


def remove_checkpoints(spec: CheckpointSpec | None) -> None:
    if spec is not None:
        shutil.rmtree(spec.directory, ignore_errors=True)
