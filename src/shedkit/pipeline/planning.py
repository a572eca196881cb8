"""``--dry-run`` for every method: the stages a run would go through, each with its work, its
estimated seconds on this machine and on a named GPU, and its resident memory; printed as a
table, written to ``OUT/work/dry_run.json`` (atomically), then the run stops with
``DryRunFinished`` (the CLI exits 0): no subset, scores or report is written.

A method module declares its stages with ``plan(planner) -> list[Stage]`` next to its ``run``;
the stage estimators are ``pipeline/plan_models.py`` (loading the model, loss scoring),
``pipeline/plan_training.py`` (fine-tune steps, first-order gradients, SHED's proxy
fine-tunes) and ``pipeline/plan_data.py`` (embeddings, k-means, GraphCut bins, DSIR's n-grams,
sampling, writing). Every estimate
says what it comes from:

* this machine: a small real sample of the stage is timed (16 rows scored, 64 rows embedded,
  LoRA optimiser steps, a first-order fit of a few rows) and scaled by the stage's work in
  tokens (the pool's rows counted with the model's tokenizer, clipped at ``max_length``), or
  a cheap stage is timed on a sample, or costed by a documented constant per row;
* a GPU: the stage's FLOPs (forward 2·P·T, backward 4·P·T for P parameters and T tokens;
  a LoRA backward is costed as a full one, an upper bound) over the GPU's dense bf16 peak
  (``GPUS``) times an assumed utilisation (``GPU_UTILISATION``: an assumption, not a
  measurement). Stages with no model work run on the CPU there too: their time is this
  machine's.
* memory: model weights + activations at the batch and length settings + the pool's data
  held by the stage (rows × dims × 4 bytes for embeddings, ...) on top of this process's
  measured resident peak before the stage; where a sample ran, its measured resident peak is
  the floor of the estimate.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, NoReturn

from shedkit.errors import ShedkitError
from shedkit.pipeline.methods.base import MethodContext
from shedkit.util.memory import peak_rss_mb

#: dense bf16 peak of a GPU (no sparsity), FLOP/s, from the vendors' data sheets
GPUS: dict[str, float] = {
    "A100-80GB": 312e12,
    "H100-SXM": 989e12,
    "H200": 989e12,
    "L4": 121e12,
}
DEFAULT_GPU = "H100-SXM"
#: the share of the GPU's peak a stage is assumed to reach: small-batch LoRA steps and scoring
#: of a ~135M-parameter model keep a large GPU far from its peak. An assumption, not measured.
GPU_UTILISATION = 0.35
FORWARD_FLOPS = 2  # per parameter and token
BACKWARD_FLOPS = 4  # per parameter and token (LoRA's backward costed as a full one: an upper bound)
GB = 1024 ** 3


def forward_flops(params: float, tokens: float) -> float:
    """FLOPs of a forward pass of a ``params``-parameter model over ``tokens`` tokens (2·P·T)."""
    return FORWARD_FLOPS * float(params) * float(tokens)


def train_flops(params: float, tokens: float) -> float:
    """FLOPs of a training step's forward + backward over ``tokens`` tokens (6·P·T)."""
    return (FORWARD_FLOPS + BACKWARD_FLOPS) * float(params) * float(tokens)


def gpu_peak(name: str) -> float:
    """The dense bf16 FLOP/s of GPU ``name`` ("did you mean" on a typo)."""
    if name not in GPUS:
        from shedkit.util.registry import unknown_name

        raise unknown_name("GPU (--dry-run-gpu)", name, GPUS)
    return GPUS[name]


def gpu_seconds(flops: float, gpu: str = DEFAULT_GPU, utilisation: float = GPU_UTILISATION) -> float:
    """Seconds of ``flops`` on ``gpu`` at ``utilisation`` of its dense bf16 peak."""
    return float(flops) / (gpu_peak(gpu) * float(utilisation))


@dataclass
class Stage:
    """One stage of a plan. ``flops`` None: the stage runs no model (or only reads from disk),
    so on a GPU machine it takes what it takes here."""

    name: str  # stable identifier: base_losses, embed, kmeans, ...
    does: str  # what it does, in words
    work: str  # its work in units, in words ("3,000 rows, 412,000 tokens")
    units: dict[str, float]  # the same, machine-readable
    seconds: float | None  # on this machine
    seconds_from: str  # what the estimate is measured or derived from
    memory_gb: float  # peak resident memory of the process during the stage
    memory_from: str
    flops: float | None = None
    gpu_seconds: float | None = None  # filled by the planner
    gpu_from: str = ""
    details: dict[str, Any] = field(default_factory=dict)  # stage-specific (SHED's valuation plan)
    notes: list[str] = field(default_factory=list)  # text printed under the table (SHED's plan)


class Planner:
    """What the stage estimators share: the run's context, the GPU named, and a memo of what
    was measured once (the loaded model, token counts, timed rates)."""

    def __init__(self, ctx: MethodContext, gpu: str = DEFAULT_GPU, utilisation: float = GPU_UTILISATION,
                 memo: dict | None = None):
        gpu_peak(gpu)
        self.ctx, self.gpu, self.utilisation = ctx, gpu, float(utilisation)
        self.memo: dict[Any, Any] = {} if memo is None else memo
        self.baseline_gb = peak_rss_mb() / 1024

    def once(self, key: Any, make: Callable[[], Any]) -> Any:
        """``make()`` the first time ``key`` is asked for, the memoised value after."""
        if key not in self.memo:
            self.memo[key] = make()
        return self.memo[key]

    def with_ctx(self, ctx: MethodContext) -> "Planner":
        """The same planner (and memo) for another context (``auto`` plans its preset's method)."""
        other = Planner(ctx, self.gpu, self.utilisation, self.memo)
        other.baseline_gb = self.baseline_gb
        return other

    def option(self, name: str, default: Any = None) -> Any:
        return self.ctx.option(name, default)

    def finish(self, stage: Stage) -> Stage:
        stage.seconds = None if stage.seconds is None else float(stage.seconds)
        stage.memory_gb = float(stage.memory_gb)
        stage.flops = None if stage.flops is None else float(stage.flops)
        stage.units = {k: float(v) for k, v in stage.units.items()}
        if stage.gpu_from:  # the stage said already (an unknown count of fine-tunes)
            return stage
        if stage.flops is None:
            stage.gpu_seconds = stage.seconds
            stage.gpu_from = "no model work: as on this machine"
        else:
            stage.gpu_seconds = gpu_seconds(stage.flops, self.gpu, self.utilisation)
            stage.gpu_from = (f"FLOPs/GPU table: {stage.flops:.3g} FLOPs / ({gpu_peak(self.gpu) / 1e12:g} TFLOPS "
                              f"bf16 x {self.utilisation:g} assumed utilisation)")
        return stage


def measured_peak_gb() -> float:
    """This process's resident peak so far, GB (``util.memory.peak_rss_mb``)."""
    return peak_rss_mb() / 1024


def timed(fn: Callable[[], Any], min_seconds: float = 0.5, max_reps: int = 50, min_reps: int = 3) -> tuple[float, int]:
    """``(median seconds of one call, calls)``. A call that takes ``min_seconds`` or more is
    made once (a real model's sample); quicker ones are repeated -- at least ``min_reps``
    times and until ``min_seconds`` have passed, at most ``max_reps`` -- and the median damps
    a busy machine."""
    runs: list[float] = []
    while True:
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
        if runs[0] >= min_seconds or len(runs) >= max_reps or (len(runs) >= min_reps and sum(runs) >= min_seconds):
            break
    runs.sort()
    return runs[len(runs) // 2], len(runs)


def number(x: float) -> str:
    """12,345 / 1.23M / 4.5G: a count for the work column."""
    x = float(x)
    for size, suffix in ((1e9, "G"), (1e6, "M")):
        if abs(x) >= size:
            return f"{x / size:.3g}{suffix}"
    return f"{x:,.0f}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 1:
        return f"{seconds:.2g} s"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m" if h else (f"{m}m {s:02d}s" if m else f"{s} s")


# -- the plan ---------------------------------------------------------------------------------

def method_plan(planner: Planner) -> list[Stage]:
    """The stages of ``planner.ctx.method`` (its module's ``plan``)."""
    from shedkit.pipeline.methods import method_module

    module = method_module(planner.ctx.method)
    plan = getattr(module, "plan", None)
    if plan is None:
        raise ShedkitError(f"--dry-run: method '{planner.ctx.method}' declares no plan")
    return list(plan(planner))


def make_plan(ctx: MethodContext, load_seconds: float | None = None) -> dict[str, Any]:
    """The dry-run plan of ``ctx``'s method as a JSON-able dict (stages + totals)."""
    from shedkit.pipeline import plan_data

    planner = Planner(ctx, str(ctx.option("dry_run_gpu", DEFAULT_GPU)))
    started = time.perf_counter()
    stages = [plan_data.load_pool_stage(planner, load_seconds), *method_plan(planner),
              plan_data.write_stage(planner)]
    stages = [planner.finish(s) for s in stages]
    known = [s.seconds for s in stages if s.seconds is not None]
    known_gpu = [s.gpu_seconds for s in stages if s.gpu_seconds is not None]
    plan: dict[str, Any] = {
        "method": ctx.method, "pool_rows": len(ctx.records), "budget": int(ctx.budget),
        "machine": machine(),
        "gpu": {"name": planner.gpu, "bf16_tflops": gpu_peak(planner.gpu) / 1e12, "utilisation": planner.utilisation,
                "utilisation_note": "assumed (small-batch LoRA / scoring of a small model), not measured",
                "flops": f"forward {FORWARD_FLOPS}·P·T, backward {BACKWARD_FLOPS}·P·T (LoRA backward costed as "
                         "a full one: an upper bound); attention's T² term left out"},
        "stages": [asdict(s) for s in stages],
        "total": {"seconds": sum(known), "gpu_seconds": sum(known_gpu),
                  "peak_memory_gb": max(s.memory_gb for s in stages),
                  "complete": len(known) == len(stages)},
        "planning_seconds": time.perf_counter() - started,
    }
    for s in stages:  # SHED: its valuation plan's keys stay where they were (planned_evaluations, timing, ...)
        if s.name == "proxy_fine_tunes":
            plan.update({k: v for k, v in s.details.items() if k not in plan})
    plan["summary"] = summary_text(plan)
    return plan


def machine() -> dict[str, Any]:
    import os
    import platform

    out: dict[str, Any] = {"cpus": os.cpu_count(), "platform": platform.platform()}
    torch = sys.modules.get("torch")  # described only where a stage loaded it: a model-free plan
    if torch is None:                 # does not pay torch's import (1.5 s, ~300 MB) for a description
        return out
    try:
        out["torch_threads"] = torch.get_num_threads()
        out["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - a description only
        pass
    return out


def summary_text(plan: dict[str, Any]) -> str:
    total = plan["total"]
    return (f"dry run of {plan['method']} on {plan['pool_rows']} rows: {len(plan['stages'])} stages, about "
            f"{duration(total['seconds'])} on this machine, {duration(total['gpu_seconds'])} on "
            f"{plan['gpu']['name']}, peak memory {total['peak_memory_gb']:.2f} GB")


def print_plan(plan: dict[str, Any], file=None) -> None:
    """The plan as a rich table, then what each estimate comes from."""
    from rich.console import Console
    from rich.table import Table

    file = file or sys.stderr
    console = Console(file=file, highlight=False, width=None if file.isatty() else 120)
    gpu = plan["gpu"]
    table = Table(title=f"dry run: {plan['method']} on {plan['pool_rows']:,} rows (budget {plan['budget']:,})",
                  title_justify="left")
    for col, justify in (("stage", "left"), ("work", "left"), ("this machine", "right"),
                         (f"{gpu['name']}", "right"), ("memory", "right")):
        table.add_column(col, justify=justify)
    for s in plan["stages"]:
        table.add_row(s["name"], s["work"], duration(s["seconds"]), duration(s["gpu_seconds"]),
                      f"{s['memory_gb']:.2f} GB")
    total = plan["total"]
    table.add_row("total", "", duration(total["seconds"]), duration(total["gpu_seconds"]),
                  f"{total['peak_memory_gb']:.2f} GB", style="bold")
    console.print(table)
    console.print(f"{gpu['name']}: {gpu['bf16_tflops']:g} TFLOPS bf16 x {gpu['utilisation']:g} utilisation "
                  f"({gpu['utilisation_note']}); FLOPs: {gpu['flops']}.")
    for s in plan["stages"]:
        console.print(f"[bold]{s['name']}[/bold]: {s['does']}")
        console.print(f"  time: {s['seconds_from']}")
        if s["flops"] is not None:
            console.print(f"  {gpu['name']}: {s['gpu_from']}")
        console.print(f"  memory: {s['memory_from']}")
        for line in s["notes"]:
            console.print(f"  {line}", markup=False)
    console.print(plan["summary"])


def dry_run(ctx: MethodContext, load_seconds: float | None = None) -> NoReturn:
    """Plan ``ctx``'s run, print it, write ``work/dry_run.json`` and raise ``DryRunFinished``."""
    from shedkit.data.containers import atomic_write_json
    from shedkit.value.planning import DryRunFinished

    plan = make_plan(ctx, load_seconds)
    atomic_write_json(ctx.run_dir / "work" / "dry_run.json", plan)
    print_plan(plan)
    raise DryRunFinished(plan)
