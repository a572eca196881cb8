"""Typed method options: each method declares a dataclass of its options, built from these groups.

One declaration serves three doors: the flags of ``shedkit select`` (``shedkit.cli.flags``
turns every field into ``--name-with-dashes``), the keys of its ``--config`` YAML, and the
keyword arguments of ``shedkit.select(...)``. An option that no method declares, or one that
the chosen method does not declare, is an error naming the closest option (``check_options``).

Every field defaults to ``None``, meaning "the method's default" (which the help text states):
that keeps "given" apart from "not given", so the manifest records only what a user chose.

Adding an option is one line in the method's dataclass (or in a shared group below)::

    bins: Optional[int] = opt("DQ: number of GraphCut bins (default 10).")

``opt(help, flags=(...))`` overrides the generated flag (``flags=("--top-k/--gumbel",)`` for a
boolean pair, ``("--clusters", "-k")`` for a short name); ``cli=False`` keeps a field out of
the CLI (a Python-only alias). A method module exposes its dataclass as ``Options``; a module
without one accepts any option unchecked (so a method ported from elsewhere still runs).
Add a whole method: copy ``pipeline/methods/dq.py`` (its ``Options`` + ``run``), add one line
to ``METHODS`` in ``pipeline/methods/__init__.py``.

Porting a flag written the old way (an explicit parameter of ``select_command``)::

    foo_seed: Optional[int] = typer.Option(None, "--foo-seed", help="Seed of foo (default: --seed).")

becomes one field in the group or method that reads it (``ctx.option("foo_seed")`` unchanged)::

    foo_seed: Optional[int] = opt("Seed of foo (default: --seed).")

A TrainConfig or ScoreConfig field needs nothing here: ``TrainOptions`` (and the ``finetune``
/ ``score`` / ``eval`` flags) are generated from those dataclasses.
"""

from __future__ import annotations

import typing
from dataclasses import MISSING, dataclass, field, fields, make_dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, List, Mapping, Optional

from shedkit.errors import ShedkitError
from shedkit.models.config import TrainConfig
from shedkit.util.defaults import DEFAULT_EMBEDDER, DEFAULT_MODEL, HASHED_EMBEDDER
from shedkit.util.registry import close_match


def opt(help: str, *, flags: tuple[str, ...] = (), cli: bool = True, default: Any = None) -> Any:
    """A method option: ``None`` by default ("the method's default"), with its help text."""
    return field(default=default, metadata={"help": help, "flags": tuple(flags), "cli": cli})


# -- shared groups ----------------------------------------------------------------------------

@dataclass
class CommonOptions:
    """Options every method takes."""

    progress: Optional[bool] = opt("Show progress bars with ETA (default on).", flags=("--progress/--no-progress",))
    dry_run: Optional[bool] = opt("Plan the run and exit: print each stage with its work, estimated time here (a small "
                                  "sample timed) and on a GPU (from FLOPs), and memory; write work/dry_run.json. "
                                  "Nothing is selected.", flags=("--dry-run/--no-dry-run",))
    dry_run_gpu: Optional[str] = opt("--dry-run: the GPU to estimate for: A100-80GB | H100-SXM | H200 | L4 "
                                     "(default H100-SXM).")


@dataclass
class DeviceOptions:
    device: Optional[str] = opt("cpu | cuda | mps (default: best available).")


@dataclass
class EmbeddingOptions(DeviceOptions):
    embedder: Optional[str] = opt(f"Sentence-transformers id/path or '{HASHED_EMBEDDER}' (default {DEFAULT_EMBEDDER}).")
    embed_batch_size: Optional[int] = opt("Texts per embedding batch (default 64).")
    embed_system: Optional[bool] = opt("Keep system prompts in the embedded text (default: left out, so a shared "
                                       "prompt does not decide the clusters).", flags=("--embed-system/--no-embed-system",))


@dataclass
class ClusteringOptions(EmbeddingOptions):
    clusters: Optional[int] = opt("Number of k-means clusters (default about sqrt(N)).", flags=("--clusters", "-k"))
    cluster_backend: Optional[str] = opt("k-means backend: auto (faiss if installed) | faiss | sklearn.")
    kmeans_iters: Optional[int] = opt("Lloyd iterations of k-means (default 50).")
    cluster_seed: Optional[int] = opt("k-means seed (default --seed); with it fixed, a new --seed samples anew from the same clusters.")


@dataclass
class ModelOptions:
    model: Optional[str] = opt(f"Proxy/base model: HF id, local path, {DEFAULT_MODEL} or tiny-random (default {DEFAULT_MODEL}).")


@dataclass
class TargetOptions:
    target: Optional[List[Path]] = opt("Target dev set(s): Alpaca-style rows or {query, choices, gold} (repeatable).")


def options_from_config(config_cls: type, name: str, rename: Mapping[str, str] | None = None) -> type:
    """An options dataclass with one ``None``-default field per field of a model-layer config
    (``TrainConfig``, ``ScoreConfig``), its help and default read from the config, never re-typed."""
    types = {"int": int, "float": float, "str": str, "bool": bool}
    rename = dict(rename or {})
    spec = []
    for f in fields(config_cls):
        kind = types[f.type] if isinstance(f.type, str) else f.type
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        help_text = f"{f.metadata['help']} [default: {default}]"
        spec.append((rename.get(f.name, f.name), Optional[kind], opt(help_text)))
    cls = make_dataclass(name, spec)
    cls.__module__ = __name__
    cls.__doc__ = f"Every field of shedkit.models.{config_cls.__name__}, as options."
    return cls


#: how proxy / reference models are fine-tuned; TrainConfig's ``method`` is ``train_method``
#: here (``--method`` names the selection method)
TrainOptions = options_from_config(TrainConfig, "TrainOptions", {"method": "train_method"})
TrainOptions.panel = "Fine-tuning options"


@dataclass
class ScoreOptions:
    """Per-row scoring (``max_length``, ``precision``, ``template`` are shared with TrainOptions)."""

    score_batch_size: Optional[int] = opt("Most rows in one scoring batch (default 16).")
    max_batch_tokens: Optional[int] = opt("Most tokens in one scoring batch (default 8192).")
    shard_size: Optional[int] = opt("Rows per loss-scoring shard: each finished shard is one cache part, and one job "
                                    "for --backend process/ray (default 256).")


@dataclass
class ValuationOptions(TargetOptions):
    """The value function v(S) and the Shapley estimator with its stopping rules."""

    objective: Optional[str] = opt("loss | mc-accuracy (default: from the target's rows).")
    estimator: Optional[str] = opt("shed (removal, SHED's) | mc (permutation) | tmc (truncated) | antithetic | msr (MSR Banzhaf) | stratified | cv (control-variate Shapley) | regression (KernelSHAP, paired).")
    removal_k: Optional[int] = opt("SHED: proxies removed per step (default 1).")
    group_credit: Optional[str] = opt("SHED, k>1: 'split' the step's drop among the k removed (efficiency holds; default) or give each the 'full' drop (the paper's wording).")
    tmc_rtol: Optional[float] = opt("Truncated MC: stop a permutation within this relative tolerance of v(full) (default 0.05).")
    permutations: Optional[int] = opt("Number of permutations T (default 10 unless another cap is given).")
    max_evals: Optional[int] = opt("Stop after this many fine-tunes.")
    max_time: Optional[float] = opt("Stop valuation after this many seconds.")
    stderr_threshold: Optional[float] = opt("Stop when every value's standard error is below this.")
    rank_stability: Optional[float] = opt("Stop when the halves' Spearman reaches this.")
    truncation: Optional[float] = opt("Permutation estimators: stop a walk within this relative tolerance of where it ends (v(full) adding, v(∅) removing); the rest get 0.")
    antithetic: Optional[bool] = opt("Permutation estimators: follow each permutation by its reverse.", flags=("--antithetic/--no-antithetic",))
    surrogate: Optional[Path] = opt("cv: per-proxy surrogate values, JSON {id: value} or CSV id,value (default: a linear model fitted on the fine-tunes so far).")
    value_seed: Optional[int] = opt("Seed of the Shapley permutations and proxy fine-tunes (default --seed); with it and --cluster-seed set, a new --seed only samples anew.")


@dataclass
class RowGuardOptions:
    """Guards and quotas of the per-row top-n methods (LoBaSS, first-order, lowest-loss, ifd)."""

    easy_quantile: Optional[float] = opt("Drop rows whose base loss is in this lowest quantile (too easy).")
    hard_quantile: Optional[float] = opt("Drop rows whose base loss is in this highest quantile (too hard).")
    quota_by: Optional[str] = opt("Column of the original rows to apply quotas by.")
    quota: Optional[List[str]] = opt("GROUP=SHARE (repeatable), e.g. alpaca=0.7.")


@dataclass
class FirstOrderOptions(TargetOptions):
    """First-order row values: TracIn over the checkpoints of one short warm-up LoRA fine-tune."""

    fo_normalize: Optional[str] = opt("First-order values: raw inner products (default), cosine, or less (LESS: "
                                      "Adam-preconditioned row gradients, centred on the pool's mean, cosine with "
                                      "each target file's dev gradients, lr-weighted over checkpoints, max over "
                                      "target files).")
    fo_center: Optional[bool] = opt("First-order --fo-normalize less: subtract the pool's mean update direction from "
                                    "each row's before the cosine (default on; off = LESS as published).",
                                    flags=("--fo-center/--no-fo-center",))
    fo_center_rows: Optional[int] = opt("First-order --fo-normalize less: pool rows (seeded sample) whose mean is the "
                                        "centre (default 256; 0 = every row, one more pass over the pool).")
    fo_task_reduce: Optional[str] = opt("First-order --fo-normalize less with several --target files: max (LESS; "
                                        "default), mean, or max-z (each file's values standardised over the pool, then the max).")
    fo_checkpoints: Optional[int] = opt("First-order: warm-up checkpoints to sum over (default 2).")
    fo_warmup: Optional[float] = opt("First-order: warm-up rows, a share of the pool or a count (default 0.05).")
    fo_layers: Optional[int] = opt("First-order: LoRA on the last N decoder layers only (default all; fewer = faster backward).")
    fo_projection_dim: Optional[int] = opt("First-order: also cache count-sketch projected gradients of this dimension (default 0: none).")
    fo_batch_size: Optional[int] = opt("First-order: rows per gradient batch (default 8).")


@dataclass
class ClusterValueOptions(FirstOrderOptions):
    """Where SHED's cluster values come from."""

    cluster_value: Optional[str] = opt("Cluster values: shapley (proxy fine-tunes; default) or first-order (row values summed, zero fine-tunes).")
    cluster_value_reduce: Optional[str] = opt("--cluster-value first-order: sum (default) or mean of the cluster's row values.")


@dataclass
class BackendOptions:
    """Where the independent jobs run: SHED's proxy fine-tunes, the shards of loss scoring
    (mapped to a backend by ``pipeline/backends.py``)."""

    backend: Optional[str] = opt("sequential | process | ray (default sequential).")
    workers: Optional[int] = opt("Worker processes for --backend process.")
    ray_address: Optional[str] = opt("Existing Ray cluster address (default: a local one).")
    gpus_per_job: Optional[float] = opt("Ray: GPUs reserved per job, a fine-tune or a loss-scoring shard (default 1 when the jobs run on CUDA, else 0).")


@dataclass
class ShedOptions(CommonOptions, ClusteringOptions, ModelOptions, ValuationOptions, TrainOptions, BackendOptions,
                  ClusterValueOptions):
    """shed-qocs / shed-qwcs (``methods/shed.py``); shed-hybrid's options build on these."""

    values: Optional[Path] = opt("CSV of cluster,value: skip valuation and only sample.")
    temperature: Optional[float] = opt("QWCS softmax temperature (default from the values' spread).")


ShedOptions.panel = "SHED options"  # as when these were declared in methods/shed.py


# -- building and checking ----------------------------------------------------------------------

def option_fields(cls: type) -> dict[str, Any]:
    """``{name: dataclasses.Field}`` of an options dataclass, with ``field.type`` resolved."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in fields(cls):
        f.type = hints.get(f.name, f.type)
        out[f.name] = f
    return out


def all_method_options() -> dict[str, type | None]:
    """``{method name: its Options dataclass (None when its module declares none)}``."""
    from shedkit.pipeline.methods import METHODS, options_class

    return {name: options_class(name) for name in METHODS}


def check_options(method: str, names: Iterable[str], where: Callable[[str], str] | None = None) -> None:
    """Fail on an option that ``method`` does not declare, naming the closest known option.

    ``where(name)`` says how the user spelt it (``"--clusters"``, ``"cfg.yaml: key 'clusters'"``).
    """
    from shedkit.pipeline.methods import options_class

    cls = options_class(method)
    if cls is None:
        return
    where = where or (lambda name: f"option '{name}'")
    own = set(option_fields(cls))
    users: dict[str, list[str]] = {}
    for other, other_cls in all_method_options().items():
        for name in option_fields(other_cls) if other_cls is not None else ():
            users.setdefault(name, []).append(other)
    for name in names:
        if name in own:
            continue
        if name in users:
            raise ShedkitError(f"{where(name)} is not used by --method {method} "
                               f"(it is an option of {', '.join(users[name])})")
        close = close_match(name, own) or close_match(name, users)
        if close is None:
            raise ShedkitError(f"unknown {where(name)}; --method {method} takes: {', '.join(sorted(own))}")
        owners = "" if close in own else f" It is an option of {', '.join(users[close])}, not of {method}."
        raise ShedkitError(f"unknown {where(name)} (did you mean '{close}'?).{owners}")


def train_config_from(options: Mapping[str, Any] | Any) -> TrainConfig:
    """The ``TrainConfig`` named by the TrainOptions among ``options`` (a dict or ``ctx``);
    options not given keep TrainConfig's defaults."""
    get = options.option if hasattr(options, "option") else options.get
    values = {}
    for name, f in option_fields(TrainOptions).items():
        value = get(name)
        if value is not None:
            kind = typing.get_args(f.type)[0]
            values["method" if name == "train_method" else name] = float(value) if kind is float else value
    return TrainConfig(**values)
