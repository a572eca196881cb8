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
weights and the mean learning rate of each segment (TracIn's ``θ_t`` and ``η_t``).
"""

from __future__ import annotations

import contextlib
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
from shedkit.models.scoring import collate, length_sorted_batches, pad_id_of, target_logits


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
class Checkpoint:
    state: dict[str, torch.Tensor]  # LoRA weights after this segment
    lr: float  # mean learning rate over the segment's optimiser steps (η_t)
    steps: int  # optimiser steps up to and including this segment
    mean_loss: float  # mean training loss over the segment


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
                out.append(Checkpoint(lora_state(model), float(np.mean(lrs)), k + 1, float(np.mean(losses))))
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
            logits = target_logits(model, batch)
        _accumulate(grads, mats, _mean_nll(logits, batch, n_tok))

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
                logits = target_logits(model, batch)
            _accumulate(grads[t], mats, _mean_nll(logits, batch, n_tok))

    _for_dev_batches(model, seqs, pad_id, batch_size, max_batch_tokens, add)
    return grads


def _mean_nll(logits, batch, n_tok: int) -> torch.Tensor:
    """The batch's summed target loss over ``n_tok`` (the dev set's token count)."""
    return torch.nn.functional.cross_entropy(logits.float(), batch.targets, reduction="sum") / n_tok


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
                              reuse_prefix: bool = True) -> RowGradientStats:
    """``row_gradient_stats`` at several checkpoints: ``checkpoints`` is a list of
    ``(lora_state or None, dev_grads)``; each batch is encoded once, its frozen prefix run
    once (``reuse_prefix``, see ``FrozenPrefix``), then each checkpoint's weights are loaded
    and its gradients taken. The model is left with the last checkpoint's weights."""
    import time

    from tqdm.auto import tqdm

    mats = lora_matrices(model)
    device = model_device(model)
    n, n_ck = len(seqs), len(checkpoints)
    dots, norms2 = np.zeros((n_ck, n)), np.zeros((n_ck, n))
    n_tokens = np.array([s.n_targets for s in seqs], dtype=np.int64)
    if np.any(n_tokens == 0):
        raise ShedkitError(f"{int(np.sum(n_tokens == 0))} row(s) have no response token left to take a gradient of")
    feats = np.zeros((n_ck, n, sketch.dim), dtype=np.float32) if sketch else None
    devs = [{name: dev[name].to(device, torch.float32) for name, _ in mats} for _, dev in checkpoints]
    prefix = FrozenPrefix.of(model, mats) if reuse_prefix else None
    lengths = [max(len(s) - 1, 1) for s in seqs]
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        with tqdm(total=n, desc=desc, unit="row", disable=not progress, leave=False) as bar:
            for idx in length_sorted_batches(lengths, batch_size, max_batch_tokens):
                batch = collate([seqs[i] for i in idx], pad_id, device)
                pos = np.asarray(idx)
                hidden = None
                if prefix is not None:
                    with autocast(precision, device):
                        hidden = prefix.hidden(batch.input_ids)
                for t, (state, _) in enumerate(checkpoints):
                    if state is not None:
                        load_lora_state(model, state)
                    with (prefix.reuse(hidden) if hidden is not None else contextlib.nullcontext()):
                        dot, sq, proj = _batch_stats(model, mats, batch, len(idx), devs[t], precision, device, sketch)
                    dots[t, pos], norms2[t, pos] = dot, sq
                    if sketch:
                        feats[t, pos] = proj
                bar.update(len(idx))
    finally:
        model.train(was_training)
    return RowGradientStats(dots, norms2, n_tokens, feats, computed=n * n_ck, seconds=time.perf_counter() - start)


def _batch_stats(model, mats, batch, size: int, dev, precision: str, device, sketch):
    with _capture(mats) as seen, autocast(precision, device):
        logits = target_logits(model, batch)
    nll = torch.nn.functional.cross_entropy(logits.float(), batch.targets, reduction="none")
    per_row = torch.zeros(size, device=device).index_add_(0, batch.rows, nll)
    per_row = per_row / torch.as_tensor(batch.counts, device=device, dtype=torch.float32)
    outs = [seen[name][1] for name, _ in mats]
    g_outs = torch.autograd.grad(per_row.sum(), outs, allow_unused=True)
    dot = torch.zeros(size, device=device, dtype=torch.float64)
    sq = torch.zeros(size, device=device, dtype=torch.float64)
    proj = torch.zeros(size, sketch.dim, device=device) if sketch else None
    for (name, _), g_out in zip(mats, g_outs):
        if g_out is None:
            continue
        a = seen[name][0].float()
        per_ex = torch.einsum("blo,bli->boi", g_out.float(), a)  # [B, out, in]
        dot += torch.einsum("boi,oi->b", per_ex, dev[name]).double()
        sq += per_ex.pow(2).sum(dim=(1, 2)).double()
        if sketch:
            sketch.add(proj, name, per_ex.reshape(size, -1))
    return dot.cpu().numpy(), sq.cpu().numpy(), (proj.cpu().numpy() if sketch else None)


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
