"""Device and numeric precision: one place that decides where and how models run.

Weights stay in float32; "bf16" means bf16 *autocast* around forward passes (matmuls in bf16,
reductions and the loss in float32). On CUDA, "auto" picks bf16 when the GPU supports it. On
CPU, "auto" picks bf16 only when oneDNN reports native bf16 support (AVX512-BF16 / AMX): on a
CPU without it (e.g. AVX2-only AMD EPYC), bf16 autocast was measured ~10x *slower* than fp32
(see bench/bench_models.py), so "auto" stays in fp32 there.
"""

from __future__ import annotations

import contextlib
from functools import lru_cache

import torch

from shedkit.errors import ShedkitError


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The one rule for every model layer (embeddings, fine-tunes, scoring):
    ``None``/"auto" -> CUDA when present, else MPS (Apple GPUs) when present, else CPU; an
    explicit device that this machine lacks ("cuda" without a CUDA GPU) is an error."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ShedkitError(f"unknown device {device!r} (use cpu, cuda, cuda:N, mps or auto)") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ShedkitError(f"device {device!r} was asked for, but this machine has no CUDA GPU that torch can use")
    if dev.type == "mps" and not mps_available():
        raise ShedkitError(f"device {device!r} was asked for, but MPS is not available here")
    return dev


def mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def device_available(device: str | torch.device) -> bool:
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_available() and (dev.index is None or dev.index < torch.cuda.device_count())
    if dev.type == "mps":
        return mps_available()
    return True


def pin_device(device: str | torch.device | None = None) -> str:
    """What a job is pinned to: None/"auto" resolved on this machine; an explicit device kept
    as given (normalised), even when this machine lacks it (a Ray driver without a GPU may
    send jobs to GPU workers; those workers check that they have it)."""
    if device is None or str(device) == "auto":
        return device_name(device)
    try:
        return str(torch.device(device))
    except (RuntimeError, TypeError) as exc:
        raise ShedkitError(f"unknown device {device!r} (use cpu, cuda, cuda:N, mps or auto)") from exc


def device_name(device: str | torch.device | None = None) -> str:
    """The resolved device as a string ("cpu", "cuda", "cuda:1", "mps"): what a job pins."""
    return str(resolve_device(device))


@lru_cache(maxsize=None)
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU executes bf16 matmuls natively (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - old or unusual builds
        return False


def resolve_precision(precision: str = "auto", device: str | torch.device | None = None) -> str:
    """'auto' | 'bf16' | 'fp32' -> 'bf16' | 'fp32' for the given device."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ShedkitError(f"precision must be 'auto', 'bf16' or 'fp32', not {precision!r}")
    if precision != "auto":
        return precision
    dev = resolve_device(device)
    if dev.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if dev.type == "cpu":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return "fp32"


def autocast(precision: str, device: str | torch.device | None = None):
    """Context manager running forward passes in ``precision`` ('bf16' autocast or plain fp32)."""
    dev = resolve_device(device)
    if resolve_precision(precision, dev) == "bf16":
        return torch.autocast(device_type=dev.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover
        return torch.device("cpu")
