"""Fine-tune a causal LM on a set of records: LoRA (peft) by default, or full fine-tuning.

A plain torch loop, deterministic: the row order comes from ``np.random.default_rng(seed)``,
LoRA initialisation and dropout from ``torch.manual_seed(seed)`` inside ``fork_rng`` (the
caller's global RNG state is untouched), so the same rows + config + seed give bitwise the same
weights on the same machine. The loss counts response tokens only (see ``encode``): per
optimiser step, the summed token loss over all its micro-batches divided by their target
token count. Each epoch is shuffled and batched separately (a few rows for 2 epochs = 2 steps).

Every fine-tune starts from the base model and leaves it as it was:
- ``finetune`` deep-copies an in-memory base (or loads a spec afresh) and returns a new model;
- ``finetuned`` (context manager, used by ``finetune_and_score``) trains LoRA adapters on the
  shared base in place and unloads them on exit (the base's weights are never written: they
  are frozen), restoring its ``requires_grad`` flags; full fine-tuning there uses a copy.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import shutil
import time
import uuid
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from shedkit.data.records import Record
from shedkit.errors import ShedkitError
from shedkit.models.config import TrainConfig
from shedkit.models.device import autocast, model_device, resolve_precision
from shedkit.models.encode import encode_options, encode_record, has_empty_response
from shedkit.models.scoring import collate, pad_id_of, target_nll
from shedkit.util.atomic import publish_mode
from shedkit.util.memory import release_memory


@dataclass
class TrainStats:
    step_losses: list[float] = field(default_factory=list)  # mean response-token loss per optimiser step
    steps: int = 0
    rows: int = 0  # training rows used (after skipping empty responses)
    tokens: int = 0  # target tokens seen, summed over epochs
    skipped: list[str] = field(default_factory=list)  # ids of rows skipped for an empty response
    seconds: float = 0.0
    precision: str = "fp32"
    trainable_params: int = 0
    resumed_from_step: int = 0  # 0: trained from the start; n: resumed from a checkpoint after step n
    checkpoints: int = 0  # checkpoints written by this run

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FineTuneResult:
    model: Any  # a peft PeftModel (LoRA) or the fully fine-tuned model, in eval mode
    tokenizer: Any
    config: TrainConfig
    seed: int
    stats: TrainStats
    base_model: str | None = None  # the spec it started from, when known


def _epoch_batches(n: int, config: TrainConfig, seed: int) -> list[list[list[int]]]:
    """Optimiser steps, each a list of micro-batches of row indices."""
    rng = np.random.default_rng(seed)
    micro: list[list[int]] = []
    whole, frac = int(config.epochs), config.epochs - int(config.epochs)
    for epoch in range(whole + (1 if frac > 0 else 0)):
        order = rng.permutation(n)
        if epoch == whole:  # the fractional last epoch
            order = order[: max(1, math.ceil(frac * n))]
        micro += [order[i : i + config.batch_size].tolist() for i in range(0, len(order), config.batch_size)]
    return [micro[i : i + config.grad_accum] for i in range(0, len(micro), config.grad_accum)]


def _lr_lambda(config: TrainConfig, total: int):
    warmup = math.ceil(config.warmup_ratio * total)

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if config.scheduler == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if config.scheduler == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return max(0.0, 1.0 - progress)

    return f


@contextlib.contextmanager
def quiet_peft():
    """Silence peft/transformers warnings that say nothing to a shedkit user (a deprecation
    inside peft; "no config file in <alias>" when saving an adapter of an aliased base)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        warnings.filterwarnings("ignore", message="Could not find a config file in.*")
        yield


def _attach_lora(model, config: TrainConfig):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=config.lora_targets(), bias="none", task_type="CAUSAL_LM",
    )
    with quiet_peft():
        return get_peft_model(model, lora)


def run_fingerprint(records: Sequence[Record], config: TrainConfig, seed: int) -> str:
    """What a fine-tune's checkpoints belong to: the rows (ids, in order), config and seed."""
    from shedkit.models.config import MODEL_LAYER_VERSION, stable_hash

    return stable_hash({"rows": [r.id for r in records], "train": config.to_dict(), "seed": int(seed),
                        "version": MODEL_LAYER_VERSION})


def optimizer_step(model, params, micro_batches: Sequence[Sequence], pad: int, device, config: TrainConfig,
                   opt, sched) -> tuple[float, int]:
    """One optimiser step over ``micro_batches`` (lists of ``Encoded``): their gradients are
    accumulated on the loss summed over all their target tokens divided by that token count,
    clipped to ``config.max_grad_norm`` (if > 0), then ``opt`` and ``sched`` step.
    Returns (the step's mean target loss, its target token count)."""
    n_tok = sum(e.n_targets for mb in micro_batches for e in mb)
    total = 0.0
    for mb in micro_batches:
        batch = collate(list(mb), pad, device)
        with autocast(config.precision, device):
            nll = target_nll(model, batch).sum()
        (nll / n_tok).backward()
        total += float(nll.detach())
    if config.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return total / n_tok, n_tok


def _train_in_place(model, tokenizer, records: Sequence[Record], config: TrainConfig, seed: int, progress: bool,
                    checkpoint=None, on_step=None):
    """Train ``model`` (LoRA: wrap it; full: unfreeze it) and return ``(model, stats)``.

    checkpoint -- a ``CheckpointSpec``: resume from its latest checkpoint of this same run, and
                  write one every ``checkpoint.every`` optimiser steps
    on_step    -- called with the number of finished steps after each step (tests stop a run there)
    """
    from shedkit.util.progress import progress_bar

    from shedkit.models.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint

    stats = TrainStats(skipped=[r.id for r in records if has_empty_response(r)])
    rows = [r for r in records if not has_empty_response(r)]
    encoded = [encode_record(tokenizer, r, config.max_length, **encode_options(config)) for r in rows]
    stats.rows = len(encoded)
    device = model_device(model)
    stats.precision = resolve_precision(config.precision, device)
    if not encoded:
        raise ShedkitError("nothing to fine-tune on: every training row has an empty response")
    pad = pad_id_of(tokenizer)
    steps = _epoch_batches(len(encoded), config, seed)
    devices = [device.index or 0] if device.type == "cuda" else []
    start = time.perf_counter()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        if config.method == "lora":
            model = _attach_lora(model, config)
        else:
            for p in model.parameters():
                p.requires_grad_(True)
        params = [p for p in model.parameters() if p.requires_grad]
        stats.trainable_params = sum(p.numel() for p in params)
        opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, foreach=False)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(config, len(steps)))
        done = 0
        saved = latest_checkpoint(checkpoint) if checkpoint is not None else None
        if saved is not None:
            done, extra = load_checkpoint(saved, model, opt, sched)
            stats.resumed_from_step = done
            stats.step_losses = [float(x) for x in extra.get("step_losses", [])]
            stats.tokens = int(extra.get("tokens", 0))
        model.train()
        try:
            with progress_bar(len(steps), "fine-tuning", enabled=progress, transient=True) as advance:
                advance(done)
                for number, step in enumerate(steps[done:], start=done + 1):
                    loss, n_tok = optimizer_step(model, params, [[encoded[i] for i in mb] for mb in step],
                                                 pad, device, config, opt, sched)
                    stats.step_losses.append(loss)
                    stats.tokens += n_tok
                    advance(1)
                    if checkpoint is not None and checkpoint.every > 0 and number % checkpoint.every == 0 and number < len(steps):
                        save_checkpoint(checkpoint, number, model, opt, sched,
                                        {"step_losses": list(stats.step_losses), "tokens": int(stats.tokens)})
                        stats.checkpoints += 1
                    if on_step is not None:
                        on_step(number)
        finally:
            model.eval()
    for p in params:
        p.grad = None
    release_memory()  # the steps' freed activations back to the OS (glibc keeps them otherwise)
    stats.steps = len(steps)
    stats.seconds = time.perf_counter() - start
    if not all(math.isfinite(x) for x in stats.step_losses):
        raise ShedkitError(f"fine-tuning diverged (non-finite loss); lower the learning rate (lr={config.lr})")
    return model, stats


def finetune(
    model,
    tokenizer=None,
    records: Sequence[Record] = (),
    config: TrainConfig | None = None,
    seed: int = 0,
    *,
    device=None,
    progress: bool = True,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 0,
    on_step=None,
) -> FineTuneResult:
    """Fine-tune a new model on ``records``; the base is never modified.

    model -- a spec (alias, path, hub id: loaded afresh) or an in-memory model (deep-copied);
             ``tokenizer`` is required with an in-memory model.
    checkpoint_dir, checkpoint_every -- write a checkpoint (trainable weights as safetensors,
             optimiser/scheduler/RNG state) every N optimiser steps, atomically; a run given the
             same directory, rows, config and seed resumes from the latest one and ends with the
             same weights as an uninterrupted run (``stats.resumed_from_step`` says where).
             The caller removes the directory once the result is saved.
    """
    config = config or TrainConfig()
    spec = None
    if isinstance(model, (str, os.PathLike)):
        from shedkit.models.loading import load_model

        spec = str(model)
        model, loaded_tok = load_model(spec, device=device)
        tokenizer = tokenizer or loaded_tok
    else:
        if tokenizer is None:
            raise ShedkitError("finetune(model, tokenizer, ...): a tokenizer is required with an in-memory model")
        model = copy.deepcopy(model)
    spec_ckpt = None
    if checkpoint_dir is not None:
        from shedkit.models.checkpoint import CheckpointSpec

        if checkpoint_every < 0:
            raise ShedkitError(f"checkpoint_every must be >= 0, not {checkpoint_every}")
        spec_ckpt = CheckpointSpec(Path(checkpoint_dir), int(checkpoint_every), run_fingerprint(records, config, seed))
    trained, stats = _train_in_place(model, tokenizer, records, config, seed, progress, spec_ckpt, on_step)
    return FineTuneResult(trained, tokenizer, config, seed, stats, base_model=spec)


@contextlib.contextmanager
def finetuned(
    base, tokenizer, records: Sequence[Record], config: TrainConfig | None = None, seed: int = 0, *, progress: bool = False
) -> Iterator[FineTuneResult]:
    """The base fine-tuned on ``records`` for the duration of the block, then restored.

    LoRA trains adapters on ``base`` in place (no copy) and removes them on exit; full
    fine-tuning trains a deep copy. Do not use ``base`` elsewhere inside the block.
    """
    config = config or TrainConfig()
    if config.method != "lora":
        yield finetune(base, tokenizer, records, config, seed, progress=progress)
        return
    flags = [p.requires_grad for p in base.parameters()]
    was_training = base.training
    wrapped = None
    try:
        wrapped, stats = _train_in_place(base, tokenizer, records, config, seed, progress)
        yield FineTuneResult(wrapped, tokenizer, config, seed, stats)
    finally:
        if wrapped is not None:
            wrapped.unload()
        _strip_lora(base)  # whatever an interrupted attach/training left behind (no-op otherwise)
        for p, flag in zip(base.parameters(), flags):
            p.requires_grad_(flag)
        base.train(was_training)


def _strip_lora(model) -> None:
    """Replace every peft wrapper module left in ``model`` by the layer it wraps."""
    for name, module in list(model.named_modules()):
        if "." in name and hasattr(module, "base_layer") and hasattr(module, "lora_A"):
            parent, child = name.rsplit(".", 1)
            setattr(model.get_submodule(parent), child, module.base_layer)


def save_finetuned(result: FineTuneResult, out_dir: str | os.PathLike, *, merged: bool = False) -> Path:
    """Write the fine-tuned model as safetensors, atomically (temp dir + rename).

    LoRA results are saved as the adapter (adapter_model.safetensors + adapter_config.json)
    unless ``merged``; a merged or fully fine-tuned model is saved whole. The tokenizer and
    ``shedkit_train.json`` (base model, train config, seed, stats) go alongside, so
    ``load_model(out_dir)`` loads it back (an adapter is applied to its base and merged).
    """
    out = Path(out_dir)
    if out.exists():
        raise ShedkitError(f"{out} already exists; choose a new directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex}"
    model = result.model
    is_peft = hasattr(model, "peft_config")
    try:
        with quiet_peft():
            _save_model(result, tmp, is_peft, merged)
        if result.tokenizer is not None:
            result.tokenizer.save_pretrained(str(tmp))
        meta = {
            "base_model": result.base_model,
            "kind": "lora-adapter" if is_peft and not merged else "model",
            "train_config": result.config.to_dict(),
            "seed": result.seed,
            "stats": result.stats.to_dict(),
        }
        (tmp / "shedkit_train.json").write_text(json.dumps(meta, indent=1))
        publish_mode(tmp, tree=True)  # safetensors writes its files private (0600)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _save_model(result: FineTuneResult, tmp: Path, is_peft: bool, merged: bool) -> None:
    model = result.model
    if is_peft and merged:
        copy.deepcopy(model).merge_and_unload().save_pretrained(str(tmp), safe_serialization=True)
        return
    if is_peft and result.base_model:
        for cfg in model.peft_config.values():
            cfg.base_model_name_or_path = result.base_model
    model.save_pretrained(str(tmp), safe_serialization=True)
