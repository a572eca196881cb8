"""Per-example LoRA gradients: their inner products with a dev-set gradient, their norms and
(optionally) a seeded random projection of them, batched, for first-order row values.

A LoRA adapter is two bias-free linear maps per adapted layer, ``y += s * B(A(x))``. For any
such linear map with weight ``W`` (input ``a_t``, gradient of the loss w.r.t. its output
``g_t`` at token ``t``), one example's gradient is ``Σ_t g_t a_t^T``. So one forward pass
(hooks keep each adapter matrix's input and output) and one ``autograd.grad`` of the summed
per-row losses w.r.t. those outputs give every row's gradient at once: rows of a right-padded,
mask-free batch never see each other (see ``scoring``), so row ``b``'s outputs only receive
gradient from row ``b``'s loss. The weights' own ``.grad`` is never formed.

The per-example gradient of each adapter matrix is materialised for one batch at a time
(``B x out x in`` floats; a LoRA matrix of rank 16 has at most a few ten thousand entries, so a
batch of 16 rows over every matrix of a 30-layer model is ~300 MB at most, ~40 MB with the
last four layers adapted): that is as cheap as the "ghost" inner products and gives the exact
norms and the projection from the same tensor. A row's loss is its mean response-token loss
(as the ``loss`` objective and LoBaSS use); the dev loss is the token-weighted mean over the
dev rows (the ``loss`` objective). Frozen layers below the first adapted one are not
back-propagated through at all (autograd stops where nothing requires a gradient), so
adapting only the last layers makes the backward pass proportionally cheaper.

Projection (``CountSketch``): each LoRA weight entry goes to one of ``dim`` buckets with a
random sign (seeded): ``E<Sx, Sy> = <x, y>`` and ``Var <= 2 |x|^2 |y|^2 / dim`` (a sparse
Johnson-Lindenstrauss map), with no dense ``|LoRA| x dim`` matrix to store.

The warm-up fine-tune (``warmup_checkpoints``) trains LoRA adapters like
``finetune._train_in_place`` (same batches, schedule, and the same ``optimizer_step``) and keeps a copy of the adapter
weights and the mean learning rate of each segment (TracIn's ``θ_t`` and ``η_t``), and the
AdamW state there (``AdamState``: moments, step, next lr; ``save_adam_state`` writes it as
safetensors).

LESS (``first_order`` with ``normalize="less"``): from the same per-row gradients,
``checkpoint_gradient_stats(..., preconditioned=...)`` also reduces each row's Adam update
direction u = Γ(g) (``adam_direction``: what AdamW's next step would do with gradient g) to
<u, T_k> per target task, |u|^2 and <u, μ>; ``checkpoint_task_directions`` gives T_k (the mean
of task k's unit plain dev gradients) and ``checkpoint_preconditioned_mean`` μ (the pool's
mean u).
"""

from __future__ import annotations

import contextlib
import copy
import math
import re
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch

from shedkit.data.records import Record
from shedkit.errors import ShedkitError
from shedkit.models.config import TrainConfig
from shedkit.models.device import autocast, model_device
from shedkit.models.encode import Encoded, encode_record
from shedkit.models.scoring import collate, length_sorted_batches, pad_id_of, target_logits, target_nll
from shedkit.util.memory import release_memory


def lora_matrices(model) -> list[tuple[str, torch.nn.Linear]]:
    """``(name, module)`` of every trainable LoRA matrix (the ``lora_A``/``lora_B`` linears)."""
    out = []
    for name, module in model.named_modules():
        parts = name.split(".")
        if (len(parts) >= 2 and parts[-2] in ("lora_A", "lora_B") and isinstance(module, torch.nn.Linear)
                and module.weight.requires_grad):
            out.append((name, module))
    if not out:
        raise ShedkitError("the model has no trainable LoRA adapter (attach one with attach_lora first)")
    return out


def frozen_weights_copy(model):
    """A copy of ``model``'s modules whose parameters are new objects over the *same storage*
    (0 bytes more for the weights, against ~0.5 GB for a deep copy of SmolLM2-135M in float32),
    tied weights kept tied. Flags (``requires_grad``) and wrappers of the copy are its own. Only
    for a copy whose weights stay frozen, e.g. under LoRA adapters: an in-place write to a
    weight (a merge of adapters) would write through to ``model``."""
    memo = {id(p): torch.nn.Parameter(p.data, requires_grad=p.requires_grad) for p in model.parameters()}
    return copy.deepcopy(model, memo)


def attach_lora(model, config: TrainConfig, last_layers: int | None = None, seed: int = 0):
    """Wrap ``model`` with LoRA adapters (``config``'s rank, alpha and targets), only on its last
    ``last_layers`` decoder layers when given. Initialisation is seeded; the caller's RNG is kept."""
    from peft import LoraConfig, get_peft_model

    from shedkit.models.finetune import quiet_peft

    extra = {}
    targets = config.lora_targets()
    if last_layers:
        n_layers = int(getattr(model.config, "num_hidden_layers", 0) or 0)
        if n_layers <= 0:
            raise ShedkitError("cannot restrict LoRA to the last layers: the model config has no num_hidden_layers")
        extra["layers_to_transform"] = list(range(max(0, n_layers - int(last_layers)), n_layers))
        if targets == "all-linear":  # peft takes layers_to_transform only with a list of names
            targets = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                              if isinstance(m, torch.nn.Linear) and re.search(r"\.\d+\.", name)})
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM", **extra)
    with torch.random.fork_rng(devices=[]), quiet_peft():
        torch.manual_seed(seed)
        return get_peft_model(model, lora)


def lora_state(model) -> dict[str, torch.Tensor]:
    """A detached copy of the trainable LoRA weights, by parameter name."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_lora_state(model, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = sorted(set(state) - set(params))
    if missing:
        raise ShedkitError(f"checkpoint has weights this model lacks: {missing[:3]}")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))


# -- the warm-up fine-tune -----------------------------------------------------------------

@dataclass
class AdamState:
    """An AdamW optimiser's state for the LoRA matrices at one checkpoint (by module name,
    as ``lora_matrices`` names them): the moments ``exp_avg`` (m) and ``exp_avg_sq`` (v), the
    steps taken, the learning rate its next step would use, and its hyper-parameters."""

    exp_avg: dict[str, torch.Tensor]
    exp_avg_sq: dict[str, torch.Tensor]
    step: int
    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0

    def direction(self, name: str, g: torch.Tensor) -> torch.Tensor:
        """``adam_direction`` of ``g`` (shape ``[..., out, in]``) for matrix ``name``."""
        return adam_direction(g, self.exp_avg[name], self.exp_avg_sq[name], self.step, self.betas, self.eps)

    def to(self, device) -> "AdamState":
        move = lambda d: {k: v.to(device, torch.float32) for k, v in d.items()}  # noqa: E731
        return AdamState(move(self.exp_avg), move(self.exp_avg_sq), self.step, self.lr, self.betas, self.eps,
                         self.weight_decay)

    @classmethod
    def of(cls, model, opt) -> "AdamState":
        """A detached copy of ``opt``'s state for ``model``'s LoRA matrices (zeros for a
        matrix that has not been stepped yet)."""
        group = opt.param_groups[0]
        m, v, steps = {}, {}, set()
        for name, module in lora_matrices(model):
            st = opt.state.get(module.weight, {})
            zero = torch.zeros_like(module.weight, dtype=torch.float32)
            m[name] = st["exp_avg"].detach().float().clone() if "exp_avg" in st else zero
            v[name] = st["exp_avg_sq"].detach().float().clone() if "exp_avg_sq" in st else zero.clone()
            steps.add(int(st["step"]) if "step" in st else 0)
        if len(steps) != 1:
            raise ShedkitError(f"the LoRA matrices' optimiser states are at different steps: {sorted(steps)}")
        return cls(m, v, steps.pop(), float(group["lr"]), tuple(float(b) for b in group["betas"]),
                   float(group["eps"]), float(group.get("weight_decay", 0.0)))


def adam_direction(g: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, step: int,
                   betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> torch.Tensor:
    """Γ(g): the direction AdamW's next step (number ``step + 1``) takes a parameter whose
    moments after ``step`` steps are ``exp_avg``/``exp_avg_sq`` when its gradient is ``g``,
    per unit learning rate and without the weight decay (which does not depend on ``g``)::

        m' = β1 m + (1 - β1) g        v' = β2 v + (1 - β2) g²       s = step + 1
        Γ(g) = (m' / (1 - β1^s)) / (sqrt(v') / sqrt(1 - β2^s) + eps)

    so AdamW moves the parameter by ``-lr * Γ(g) - lr * weight_decay * θ`` (LESS's Γ, with
    Adam's bias correction and ``eps`` outside the root as torch's AdamW has them). ``g`` may
    carry leading batch dimensions; the moments broadcast over them."""
    beta1, beta2 = betas
    s = int(step) + 1
    m = exp_avg * beta1 + g * (1 - beta1)
    v = exp_avg_sq * beta2 + g * g * (1 - beta2)
    return (m / (1 - beta1 ** s)) / (v.sqrt() / math.sqrt(1 - beta2 ** s) + eps)


ADAM_FORMAT = "shedkit-adam-1"


def save_adam_state(path, state: AdamState) -> None:
    """``state`` as one safetensors file (tensors ``exp_avg/<name>``, ``exp_avg_sq/<name>``,
    the scalars in its metadata); written through a temp file published with umask modes."""
    from safetensors.torch import save_file

    from shedkit.util.atomic import atomic_path

    tensors = {**{f"exp_avg/{k}": v.detach().cpu().contiguous() for k, v in state.exp_avg.items()},
               **{f"exp_avg_sq/{k}": v.detach().cpu().contiguous() for k, v in state.exp_avg_sq.items()}}
    meta = {"format": ADAM_FORMAT, "step": str(int(state.step)), "lr": repr(float(state.lr)),
            "beta1": repr(float(state.betas[0])), "beta2": repr(float(state.betas[1])), "eps": repr(float(state.eps)),
            "weight_decay": repr(float(state.weight_decay))}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_adam_state(path) -> AdamState:
    from safetensors import safe_open

    m, v = {}, {}
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != ADAM_FORMAT:
            raise ShedkitError(f"{path} is not a shedkit Adam state ({ADAM_FORMAT})")
        for key in f.keys():
            kind, name = key.split("/", 1)
            (m if kind == "exp_avg" else v)[name] = f.get_tensor(key)
    return AdamState(m, v, int(meta["step"]), float(meta["lr"]), (float(meta["beta1"]), float(meta["beta2"])),
                     float(meta["eps"]), float(meta["weight_decay"]))


@dataclass
class Checkpoint:
    state: dict[str, torch.Tensor]  # LoRA weights after this segment
    lr: float  # mean learning rate over the segment's optimiser steps (η_t)
    steps: int  # optimiser steps up to and including this segment
    mean_loss: float  # mean training loss over the segment
    adam: AdamState | None = None  # the optimiser's state at the checkpoint (LESS's preconditioner)


def warmup_checkpoints(model, tokenizer, records: Sequence[Record], config: TrainConfig, n_checkpoints: int,
                       seed: int = 0, progress: bool = True) -> list[Checkpoint]:
    """Train ``model``'s (already attached) LoRA adapters on ``records`` for ``config.epochs``
    and return ``n_checkpoints`` snapshots at equal shares of the optimiser steps."""
    from tqdm.auto import tqdm

    from shedkit.models.encode import has_empty_response
    from shedkit.models.finetune import _epoch_batches, _lr_lambda, optimizer_step

    rows = [r for r in records if not has_empty_response(r)]
    if not rows:
        raise ShedkitError("the warm-up fine-tune has no row with a response")
    encoded = [encode_record(tokenizer, r, config.max_length, config.template) for r in rows]
    steps = _epoch_batches(len(encoded), config, seed)
    if n_checkpoints < 1 or n_checkpoints > len(steps):
        raise ShedkitError(f"{n_checkpoints} checkpoints need at least as many warm-up steps (have {len(steps)}); "
                           "use more warm-up rows or epochs, or fewer checkpoints")
    ends = [round(len(steps) * (k + 1) / n_checkpoints) for k in range(n_checkpoints)]
    device, pad = model_device(model), pad_id_of(tokenizer)
    params = [p for p in model.parameters() if p.requires_grad]
    schedule = _lr_lambda(config, len(steps))
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, foreach=False)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    out: list[Checkpoint] = []
    lrs: list[float] = []
    losses: list[float] = []
    model.train()
    try:
        for k, step in enumerate(tqdm(steps, desc="first-order warm-up", unit="step", disable=not progress, leave=False)):
            lrs.append(opt.param_groups[0]["lr"])
            loss, _ = optimizer_step(model, params, [[encoded[i] for i in mb] for mb in step],
                                     pad, device, config, opt, sched)
            losses.append(loss)
            if k + 1 in ends:
                out.append(Checkpoint(lora_state(model), float(np.mean(lrs)), k + 1, float(np.mean(losses)),
                                      AdamState.of(model, opt)))
                lrs, losses = [], []
    finally:
        model.eval()
        for p in params:
            p.grad = None
    if not all(math.isfinite(c.mean_loss) for c in out):
        raise ShedkitError(f"the warm-up fine-tune diverged (non-finite loss); lower the learning rate (lr={config.lr})")
    return out


# -- gradients -----------------------------------------------------------------------------

def dev_gradient(model, seqs: Sequence[Encoded], pad_id: int, precision: str = "auto",
                 batch_size: int = 8, max_batch_tokens: int = 4096) -> dict[str, torch.Tensor]:
    """Gradient of the token-weighted mean target loss over ``seqs`` w.r.t. each LoRA matrix
    (by module name, float32)."""
    mats = lora_matrices(model)
    grads = {name: torch.zeros_like(m.weight, dtype=torch.float32) for name, m in mats}

    def add(batch, n_tok: int, device) -> None:
        with autocast(precision, device):
            loss = target_nll(model, batch).sum() / n_tok
        _accumulate(grads, mats, loss)

    _for_dev_batches(model, seqs, pad_id, batch_size, max_batch_tokens, add)
    return grads


def checkpoint_dev_gradients(model, seqs: Sequence[Encoded], states: Sequence[dict], pad_id: int,
                             precision: str = "auto", batch_size: int = 8,
                             max_batch_tokens: int = 4096) -> list[dict[str, torch.Tensor]]:
    """``dev_gradient`` at each LoRA state of ``states``, each batch's frozen prefix run once
    (see ``FrozenPrefix``). The model is left with the last state's weights."""
    mats = lora_matrices(model)
    grads = [{name: torch.zeros_like(m.weight, dtype=torch.float32) for name, m in mats} for _ in states]
    prefix = FrozenPrefix.of(model, mats)

    def add(batch, n_tok: int, device) -> None:
        hidden = None
        if prefix is not None:
            with autocast(precision, device):
                hidden = prefix.hidden(batch.input_ids)
        for t, state in enumerate(states):
            load_lora_state(model, state)
            with (prefix.reuse(hidden) if hidden is not None else contextlib.nullcontext()), autocast(precision, device):
                loss = target_nll(model, batch).sum() / n_tok
            _accumulate(grads[t], mats, loss)

    _for_dev_batches(model, seqs, pad_id, batch_size, max_batch_tokens, add)
    return grads


def _accumulate(grads: dict[str, torch.Tensor], mats, loss: torch.Tensor) -> None:
    """Add d loss / d W of each LoRA matrix in ``mats`` to ``grads[name]`` (float32)."""
    for (name, _), g in zip(mats, torch.autograd.grad(loss, [m.weight for _, m in mats])):
        grads[name] += g.float()


def _for_dev_batches(model, seqs: Sequence[Encoded], pad_id: int, batch_size: int, max_batch_tokens: int,
                     add) -> None:
    """Call ``add(batch, n_tok, device)`` on each length-sorted batch of ``seqs`` (``n_tok``: the
    target tokens of all of ``seqs``), the model in eval mode meanwhile, then put back as it was."""
    device = model_device(model)
    n_tok = sum(s.n_targets for s in seqs)
    if n_tok == 0:
        raise ShedkitError("the dev set has no response token")
    lengths = [max(len(s) - 1, 1) for s in seqs]
    was_training = model.training
    model.eval()
    try:
        for idx in length_sorted_batches(lengths, batch_size, max_batch_tokens):
            add(collate([seqs[i] for i in idx], pad_id, device), n_tok, device)
    finally:
        model.train(was_training)


class CountSketch:
    """A seeded sparse JL map of the concatenated LoRA weights to ``dim`` numbers."""

    def __init__(self, shapes: Sequence[tuple[str, tuple[int, ...]]], dim: int, seed: int = 0):
        if dim < 1:
            raise ShedkitError(f"projection dimension must be >= 1, got {dim}")
        self.dim = int(dim)
        gen = torch.Generator().manual_seed(int(seed))
        self.buckets, self.signs = {}, {}
        for name, shape in shapes:
            size = int(np.prod(shape))
            self.buckets[name] = torch.randint(0, self.dim, (size,), generator=gen)
            self.signs[name] = torch.randint(0, 2, (size,), generator=gen).float() * 2 - 1

    def add(self, out: torch.Tensor, name: str, flat: torch.Tensor) -> None:
        """``out[b] += S_name flat[b]`` for a ``[B, size]`` block of one matrix's entries."""
        out.index_add_(1, self.buckets[name].to(flat.device), flat * self.signs[name].to(flat.device))

    def project(self, grads: dict[str, torch.Tensor]) -> torch.Tensor:
        """One gradient (a dict of matrices) -> its ``dim`` sketch."""
        out = torch.zeros(1, self.dim)
        for name, g in grads.items():
            self.add(out, name, g.detach().float().reshape(1, -1).cpu())
        return out[0]


@dataclass
class RowGradientStats:
    """Per row (input order): <g_row, g_dev>, |g_row|^2, target tokens, and the sketch; with
    several checkpoints ``dots``/``norms2`` are ``[checkpoints, rows]`` and ``features``
    ``[checkpoints, rows, dim]``."""

    dots: np.ndarray
    norms2: np.ndarray
    n_tokens: np.ndarray
    features: np.ndarray | None = None  # float32, when a projection was asked
    computed: int = 0  # row gradients computed here (rows x checkpoints)
    seconds: float = 0.0
    info: dict = field(default_factory=dict)
    # with ``preconditioned`` targets (u = Γ_t(g_row), the Adam update direction):
    pre_dots: np.ndarray | None = None  # [checkpoints, rows, tasks]: <u, target direction of task k>
    pre_norms2: np.ndarray | None = None  # [checkpoints, rows]: |u|^2
    pre_center_dots: np.ndarray | None = None  # [checkpoints, rows]: <u, the pool's mean u> (NaN: no centre)


@dataclass
class PreconditionedTargets:
    """What the ``less`` values need at one checkpoint: the Adam state that turns a row's
    gradient into its update direction u = Γ(g), the target directions (per LoRA matrix a
    ``[tasks, out, in]`` tensor, see ``checkpoint_task_directions``) and the pool's mean u
    (``checkpoint_preconditioned_mean``; None when not asked)."""

    adam: AdamState
    tasks: dict[str, torch.Tensor]
    center: dict[str, torch.Tensor] | None = None

    @property
    def n_tasks(self) -> int:
        return int(next(iter(self.tasks.values())).shape[0])

    def to(self, device) -> "PreconditionedTargets":
        move = lambda d: None if d is None else {k: v.to(device, torch.float32) for k, v in d.items()}  # noqa: E731
        return PreconditionedTargets(self.adam.to(device), move(self.tasks), move(self.center))


@contextlib.contextmanager
def _capture(mats: Sequence[tuple[str, torch.nn.Linear]]) -> Iterator[dict]:
    """Inputs and outputs of every LoRA matrix during the forward passes inside the block."""
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(name):
        def f(module, inputs, output):
            seen[name] = (inputs[0].detach(), output)
        return f

    handles = [m.register_forward_hook(hook(name)) for name, m in mats]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


class _Stop(Exception):
    pass


class _Skip(torch.nn.Module):
    """Stands in for a frozen decoder layer whose output is already known."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


class FrozenPrefix:
    """Run the frozen decoder layers below the first adapted one once per batch, and reuse
    their output for every checkpoint (only the adapted layers change between checkpoints).

    Works for decoders that keep their layers in ``decoder.layers`` and call each with the
    hidden states as first argument (every Hugging Face causal LM with a ``model.layers``
    list); ``FrozenPrefix.of`` returns None for anything else, and callers run the full model.
    """

    def __init__(self, decoder, first: int):
        self.decoder, self.first = decoder, first

    @classmethod
    def of(cls, model, mats) -> "FrozenPrefix | None":
        from shedkit.models.scoring import _decoder_and_head

        split = _decoder_and_head(model)
        layers = getattr(split[0], "layers", None) if split else None
        if not isinstance(layers, torch.nn.ModuleList):
            return None
        index = [int(m.group(1)) for name, _ in mats for m in [re.search(r"\.layers\.(\d+)\.", name)] if m]
        if len(index) != len(mats) or min(index) == 0:
            return None
        return cls(split[0], min(index))

    @torch.no_grad()
    def hidden(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The input of the first adapted layer."""
        box = {}

        def grab(module, args, kwargs):
            box["h"] = args[0] if args else kwargs["hidden_states"]
            raise _Stop

        handle = self.decoder.layers[self.first].register_forward_pre_hook(grab, with_kwargs=True)
        try:
            self.decoder(input_ids=input_ids, use_cache=False)
        except _Stop:
            pass
        finally:
            handle.remove()
        return box["h"]

    @contextlib.contextmanager
    def reuse(self, hidden: torch.Tensor):
        """Inside the block the decoder skips its frozen layers and starts from ``hidden``."""
        layers = self.decoder.layers
        saved = [layers[i] for i in range(self.first)]

        def feed(module, args, kwargs):
            if args:
                return (hidden, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": hidden}

        for i in range(self.first):
            layers[i] = _Skip()
        handle = layers[self.first].register_forward_pre_hook(feed, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()
            for i, layer in enumerate(saved):
                layers[i] = layer


def row_gradient_stats(model, seqs: Sequence[Encoded], dev_grads: dict[str, torch.Tensor], pad_id: int,
                       precision: str = "auto", batch_size: int = 8, max_batch_tokens: int = 4096,
                       sketch: CountSketch | None = None, progress: bool = False,
                       desc: str = "row gradients") -> RowGradientStats:
    """Every row's LoRA gradient (of its mean target loss) at the model's current weights,
    reduced to its inner product with ``dev_grads``, its squared norm and (with ``sketch``)
    its projection; batched."""
    stats = checkpoint_gradient_stats(model, seqs, [(None, dev_grads)], pad_id, precision, batch_size,
                                      max_batch_tokens, sketch, progress, desc, reuse_prefix=False)
    stats.dots, stats.norms2 = stats.dots[0], stats.norms2[0]
    if stats.features is not None:
        stats.features = stats.features[0]
    return stats


def checkpoint_gradient_stats(model, seqs: Sequence[Encoded], checkpoints, pad_id: int, precision: str = "auto",
                              batch_size: int = 8, max_batch_tokens: int = 4096, sketch: CountSketch | None = None,
                              progress: bool = False, desc: str = "row gradients",
                              reuse_prefix: bool = True,
                              preconditioned: Sequence[PreconditionedTargets] | None = None) -> RowGradientStats:
    """``row_gradient_stats`` at several checkpoints: ``checkpoints`` is a list of
    ``(lora_state or None, dev_grads)``; each batch is encoded once, its frozen prefix run
    once (``reuse_prefix``, see ``FrozenPrefix``), then each checkpoint's weights are loaded
    and its gradients taken. The model is left with the last checkpoint's weights.

    ``preconditioned`` (one ``PreconditionedTargets`` per checkpoint): from the same per-row
    gradients also each row's Adam update direction u = Γ_t(g), reduced to its inner products
    with the task directions, |u|^2 and <u, centre> (``pre_*`` fields)."""
    import time

    mats = lora_matrices(model)
    device = model_device(model)
    n, n_ck = len(seqs), len(checkpoints)
    dots, norms2 = np.zeros((n_ck, n)), np.zeros((n_ck, n))
    n_tokens = np.array([s.n_targets for s in seqs], dtype=np.int64)
    if np.any(n_tokens == 0):
        raise ShedkitError(f"{int(np.sum(n_tokens == 0))} row(s) have no response token left to take a gradient of")
    feats = np.zeros((n_ck, n, sketch.dim), dtype=np.float32) if sketch else None
    devs = [{name: dev[name].to(device, torch.float32) for name, _ in mats} for _, dev in checkpoints]
    pre = None
    if preconditioned is not None:
        if len(preconditioned) != n_ck:
            raise ShedkitError(f"{len(preconditioned)} preconditioned targets for {n_ck} checkpoints")
        pre = [p.to(device) for p in preconditioned]
        pre_dots = np.zeros((n_ck, n, pre[0].n_tasks))
        pre_norms2, pre_center = np.zeros((n_ck, n)), np.full((n_ck, n), np.nan)
    start = time.perf_counter()
    with contextlib.closing(_walk(model, mats, seqs, [s for s, _ in checkpoints], pad_id, precision, batch_size,
                                  max_batch_tokens, reuse_prefix, progress, desc)) as walk:
        for t, pos, batch in walk:
            out = _batch_stats(model, mats, batch, len(pos), devs[t], precision, device, sketch,
                               pre[t] if pre is not None else None)
            dots[t, pos], norms2[t, pos] = out["dot"], out["sq"]
            if sketch:
                feats[t, pos] = out["proj"]
            if pre is not None:
                pre_dots[t, pos], pre_norms2[t, pos] = out["pre_dot"], out["pre_sq"]
                if out["pre_center"] is not None:
                    pre_center[t, pos] = out["pre_center"]
    stats = RowGradientStats(dots, norms2, n_tokens, feats, computed=n * n_ck, seconds=time.perf_counter() - start)
    if pre is not None:
        stats.pre_dots, stats.pre_norms2, stats.pre_center_dots = pre_dots, pre_norms2, pre_center
    return stats


def _walk(model, mats, seqs: Sequence[Encoded], states: Sequence, pad_id: int, precision: str, batch_size: int,
          max_batch_tokens: int, reuse_prefix: bool = True, progress: bool = False, desc: str = "row gradients"):
    """Yield ``(t, positions, batch)`` for every length-sorted batch of ``seqs`` and every
    checkpoint ``t`` of ``states`` (a LoRA state, or None: the current weights), with that
    checkpoint's weights loaded and, inside the consumer's loop body, the batch's frozen prefix
    reused (``FrozenPrefix``); the model is in eval mode meanwhile, then put back. Consume it
    under ``contextlib.closing`` so an exception restores the model at once."""
    from tqdm.auto import tqdm

    device = model_device(model)
    prefix = FrozenPrefix.of(model, mats) if reuse_prefix else None
    lengths = [max(len(s) - 1, 1) for s in seqs]
    was_training = model.training
    model.eval()
    try:
        with tqdm(total=len(seqs), desc=desc, unit="row", disable=not progress, leave=False) as bar:
            for idx in length_sorted_batches(lengths, batch_size, max_batch_tokens):
                batch = collate([seqs[i] for i in idx], pad_id, device)
                pos = np.asarray(idx)
                hidden = None
                if prefix is not None:
                    with autocast(precision, device):
                        hidden = prefix.hidden(batch.input_ids)
                for t, state in enumerate(states):
                    if state is not None:
                        load_lora_state(model, state)
                    with (prefix.reuse(hidden) if hidden is not None else contextlib.nullcontext()):
                        yield t, pos, batch
                bar.update(len(idx))
    finally:
        model.train(was_training)
        release_memory()


def _row_output_grads(model, mats, batch, size: int, precision: str,
                      device) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """``(name, d loss / d output, input)`` of every LoRA matrix that got a gradient, where
    the loss is the sum over the batch's rows of each row's MEAN response-token loss (so row
    ``b``'s slice is the gradient of its own mean loss: rows never see each other)."""
    with _capture(mats) as seen, autocast(precision, device):
        nll = target_nll(model, batch)
    per_row = torch.zeros(size, device=device).index_add_(0, batch.rows, nll)
    per_row = per_row / torch.as_tensor(batch.counts, device=device, dtype=torch.float32)
    outs = [seen[name][1] for name, _ in mats]
    g_outs = torch.autograd.grad(per_row.sum(), outs, allow_unused=True)
    return [(name, g_out, seen[name][0]) for (name, _), g_out in zip(mats, g_outs) if g_out is not None]


def _per_example(g_out: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Each row's gradient of a bias-free linear map, ``Σ_t g_t a_t^T``: ``[B, out, in]``."""
    return torch.einsum("blo,bli->boi", g_out.float(), a.float())


def _batch_stats(model, mats, batch, size: int, dev, precision: str, device, sketch,
                 pre: PreconditionedTargets | None = None) -> dict:
    dot = torch.zeros(size, device=device, dtype=torch.float64)
    sq = torch.zeros(size, device=device, dtype=torch.float64)
    proj = torch.zeros(size, sketch.dim, device=device) if sketch else None
    if pre is not None:
        pre_dot = torch.zeros(size, pre.n_tasks, device=device, dtype=torch.float64)
        pre_sq = torch.zeros(size, device=device, dtype=torch.float64)
        pre_center = torch.zeros(size, device=device, dtype=torch.float64) if pre.center is not None else None
    for name, g_out, a in _row_output_grads(model, mats, batch, size, precision, device):
        per_ex = _per_example(g_out, a)  # [B, out, in]
        dot += torch.einsum("boi,oi->b", per_ex, dev[name]).double()
        sq += per_ex.pow(2).sum(dim=(1, 2)).double()
        if sketch:
            sketch.add(proj, name, per_ex.reshape(size, -1))
        if pre is not None:
            u = pre.adam.direction(name, per_ex)
            pre_dot += torch.einsum("boi,koi->bk", u, pre.tasks[name]).double()
            pre_sq += u.pow(2).sum(dim=(1, 2)).double()
            if pre_center is not None:
                pre_center += torch.einsum("boi,oi->b", u, pre.center[name]).double()
    out = {"dot": dot.cpu().numpy(), "sq": sq.cpu().numpy(), "proj": proj.cpu().numpy() if sketch else None}
    if pre is not None:
        out.update(pre_dot=pre_dot.cpu().numpy(), pre_sq=pre_sq.cpu().numpy(),
                   pre_center=pre_center.cpu().numpy() if pre_center is not None else None)
    return out


def checkpoint_task_directions(model, tasks: Sequence[Sequence[Encoded]], states: Sequence, pad_id: int,
                               precision: str = "auto", batch_size: int = 8,
                               max_batch_tokens: int = 4096) -> list[dict[str, torch.Tensor]]:
    """LESS's target side, per checkpoint: for each LoRA matrix a ``[tasks, out, in]``
    tensor whose row ``k`` is the mean over task ``k``'s rows of their unit-normalised plain
    (SGD, not preconditioned) gradients of each row's mean response-token loss. For a unit
    vector x, ``<x, row k>`` is then the mean over task k's rows of cos(x, g_j): LESS's
    per-task average of per-example cosines, with one vector per task instead of one per
    dev row. Rows with no response token left are skipped; a task with none is an error.
    The model is left with the last state's weights (float32 results, on the model's device)."""
    mats = lora_matrices(model)
    seqs, task_of = [], []
    for k, rows in enumerate(tasks):
        kept = [s for s in rows if s.n_targets > 0]
        if not kept:
            raise ShedkitError(f"target task {k + 1} has no row with a response token left (max_length too short?)")
        seqs += kept
        task_of += [k] * len(kept)
    device = model_device(model)
    n_k = np.bincount(task_of, minlength=len(tasks))
    weight = torch.as_tensor(1.0 / n_k[task_of], dtype=torch.float32, device=device)
    task_of = torch.as_tensor(task_of, device=device)
    out = [{name: torch.zeros((len(tasks), *m.weight.shape), dtype=torch.float32, device=device)
            for name, m in mats} for _ in states]
    with contextlib.closing(_walk(model, mats, seqs, states, pad_id, precision, batch_size, max_batch_tokens)) as walk:
        for t, pos, batch in walk:
            grads = _row_output_grads(model, mats, batch, len(pos), precision, device)
            sq = torch.zeros(len(pos), device=device, dtype=torch.float64)
            for _, g_out, a in grads:
                sq += _per_example(g_out, a).pow(2).sum(dim=(1, 2)).double()
            idx = torch.as_tensor(pos, device=device)
            scale = (weight[idx] / sq.sqrt().float().clamp_min(1e-30))[:, None, None]
            for name, g_out, a in grads:
                out[t][name].index_add_(0, task_of[idx], _per_example(g_out, a) * scale)
    return out


def checkpoint_preconditioned_mean(model, seqs: Sequence[Encoded], states: Sequence, adams: Sequence[AdamState],
                                   pad_id: int, precision: str = "auto", batch_size: int = 8,
                                   max_batch_tokens: int = 4096, progress: bool = False,
                                   desc: str = "first-order centre") -> list[dict[str, torch.Tensor]]:
    """Per checkpoint, the mean over ``seqs`` of each row's Adam update direction Γ_t(g)
    (per LoRA matrix, float32): the centre that ``less`` values subtract from every row's
    direction. Rows with no response token are skipped. The model is left with the last
    state's weights."""
    mats = lora_matrices(model)
    seqs = [s for s in seqs if s.n_targets > 0]
    if not seqs:
        raise ShedkitError("no row to take the pool's mean gradient over")
    device = model_device(model)
    adams = [a.to(device) for a in adams]
    out = [{name: torch.zeros_like(m.weight, dtype=torch.float32) for name, m in mats} for _ in states]
    with contextlib.closing(_walk(model, mats, seqs, states, pad_id, precision, batch_size, max_batch_tokens,
                                  progress=progress, desc=desc)) as walk:
        for t, pos, batch in walk:
            for name, g_out, a in _row_output_grads(model, mats, batch, len(pos), precision, device):
                out[t][name] += adams[t].direction(name, _per_example(g_out, a)).sum(0) / len(seqs)
    return out


def naive_row_gradients(model, seqs: Sequence[Encoded], pad_id: int) -> list[dict[str, torch.Tensor]]:
    """Reference for tests: one backward per row, the LoRA weights' ``.grad`` read back."""
    mats = lora_matrices(model)
    device = model_device(model)
    out = []
    for s in seqs:
        for _, m in mats:
            m.weight.grad = None
        batch = collate([s], pad_id, device)
        nll = torch.nn.functional.cross_entropy(target_logits(model, batch).float(), batch.targets)
        nll.backward()
        out.append({name: m.weight.grad.detach().clone() for name, m in mats})
    for _, m in mats:
        m.weight.grad = None
    return out
