"""Dry-run estimates of the stages that train or differentiate the language model (see
``pipeline/planning.py``): LoRA fine-tunes (LoBaSS's reference, first-order's warm-up),
first-order gradients, SHED's proxy fine-tunes, and LoBaSS's reference with its losses.

Fine-tune steps are timed on a 3-step fine-tune of rows spread over the pool's lengths,
batched at random as the run draws them (steps 2 and 3 timed; the first also attaches the
adapters), and scaled by the tokens trained. First-order's gradient stages are timed by a
real first-order fit of two gradient batches of pool rows and a few dev rows, each of its
stages scaled by its own tokens. SHED's fine-tunes: one real fine-tune timed
(``shed_values.valuation_plan``) times the fine-tunes its estimator and rules allow. FLOPs
count a LoRA backward as a full one (4·P·T): an upper bound.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from shedkit.pipeline.plan_models import (clipped, lm, longest, loss_stage, row_tokens, spread, training_gb,
                                          usable_rows, windows)
from shedkit.pipeline.planning import Planner, Stage, forward_flops, measured_peak_gb, number, train_flops

FO_DEV_SAMPLE = 8  # dev rows of the first-order sample fit


# -- fine-tunes -------------------------------------------------------------------------------

def _train_rate(p: Planner, config) -> dict[str, Any]:
    """Seconds per trained token: a fine-tune of 3 optimiser steps on rows spread over the
    pool's lengths, timing steps 2 and 3 (step 1 also attaches the adapters)."""
    def measure() -> dict[str, Any]:
        from shedkit.models.finetune import _epoch_batches, finetune

        m, (lengths, _) = lm(p), row_tokens(p, "record", config)
        per_step = config.batch_size * config.grad_accum
        sample = spread(lengths, usable_rows(p), 3 * per_step)
        rng = np.random.default_rng(0)
        sample = [sample[i] for i in rng.permutation(len(sample))]
        cfg = replace(config, epochs=1.0)
        times: list[float] = []
        start = time.perf_counter()
        finetune(m.model, m.tokenizer, [p.ctx.records[i] for i in sample], cfg, int(p.ctx.seed), progress=False,
                 on_step=lambda _n: times.append(time.perf_counter()))
        steps = _epoch_batches(len(sample), cfg, int(p.ctx.seed))
        if len(steps) > 1:
            used, seconds = range(1, len(steps)), times[-1] - times[0]
        else:  # one step only (a tiny pool): it includes attaching the adapters
            used, seconds = range(1), times[0] - start
        tokens = sum(clipped(lengths, config.max_length, [sample[i] for mb in steps[k] for i in mb]) for k in used)
        return {"rate": seconds / max(tokens, 1.0), "steps": len(used), "rows": len(sample), "tokens": tokens,
                "seconds": seconds, "peak_gb": measured_peak_gb()}
    return p.once(("train-rate", config), measure)


def fine_tune_stage(p: Planner, name: str, does: str, rows: Sequence[int], config,
                    rate: dict[str, Any] | None = None, adapted_layers: int | None = None,
                    weight_copies: int = 2) -> Stage:
    """A LoRA (or full) fine-tune of the model on ``rows`` for ``config.epochs``; ``rate``: a
    measured seconds-per-token (``_train_rate``'s keys) to use instead of timing one;
    ``adapted_layers``: LoRA on the last N layers only (activations kept for those);
    ``weight_copies``: the base and its copy (2), or one where the copy shares the frozen weights."""
    from shedkit.models.finetune import _epoch_batches

    m = lm(p)
    lengths, how = row_tokens(p, "record", config)
    tokens = float(config.epochs) * clipped(lengths, config.max_length, rows)
    steps = len(_epoch_batches(len(rows), config, int(p.ctx.seed))) if rows else 0
    rate = rate or _train_rate(p, config)
    width = longest(lengths, rows, config.max_length)
    act = training_gb(m, config.batch_size, width, layers=adapted_layers)
    trainable = m.weights_gb if config.method == "full" else 0.02 * m.weights_gb
    return Stage(
        name, does, f"{steps:,} steps, {len(rows):,} rows x {config.epochs:g} epoch(s), {number(tokens)} tokens",
        {"steps": steps, "rows": len(rows), "tokens": tokens}, rate["rate"] * tokens,
        f"timed {rate['steps']} optimiser step(s) of {rate.get('what', 'a fine-tune')} of {rate['rows']} rows "
        f"({number(rate['tokens'])} "
        f"tokens: {rate['seconds']:.3g} s): {rate['rate']:.3g} s/token x {number(tokens)} tokens (tokens: {how}, "
        f"clipped at max_length {config.max_length})",
        max(rate["peak_gb"], p.baseline_gb + weight_copies * m.weights_gb + 4 * trainable + act),
        (f"base + its copy 2 x {m.weights_gb:.3f} GB" if weight_copies == 2 else
         f"base {m.weights_gb:.3f} GB (its copy shares the frozen weights)")
        + f", trainable weights with AdamW state, activations {act:.3f} GB (a batch of {config.batch_size} rows "
        f"padded to {width:.0f} tokens" + (f", {adapted_layers} adapted layer(s)" if adapted_layers else "")
        + f"); measured peak after "
        f"the timed steps {rate['peak_gb']:.2f} GB",
        flops=train_flops(m.params, tokens))


# -- first-order gradients --------------------------------------------------------------------

def _fo_layers(p: Planner) -> int | None:
    """``--fo-layers``: LoRA on the last N decoder layers (None: all)."""
    return int(p.option("fo_layers")) if p.option("fo_layers") else None


def _fo_sample(p: Planner, config) -> dict[str, Any]:
    """A real first-order fit on two gradient batches of pool rows (``windows``; more if the
    warm-up needs a step per checkpoint) and ``FO_DEV_SAMPLE`` dev rows, in a scratch cache:
    the seconds of each of its stages, for their rates."""
    def measure() -> dict[str, Any]:
        from shedkit.models.finetune import _epoch_batches
        from shedkit.models.objectives import DevSet
        from shedkit.pipeline.first_order_values import target_tasks
        from shedkit.pipeline.targets import load_targets
        from shedkit.value.registry import get_valuation

        m, (lengths, _) = lm(p), row_tokens(p, "record", config)
        checkpoints = int(p.option("fo_checkpoints", 2))
        size = max(1, int(p.option("fo_batch_size", 8)))
        work = np.minimum(lengths, config.max_length)
        sample = windows(work, usable_rows(p), size)
        k, seed = 2, int(p.ctx.seed)
        while len(_epoch_batches(len(sample), config, seed)) < checkpoints and len(sample) < len(usable_rows(p)):
            k += 1  # the sample also warms up: enough rows for a step per checkpoint
            sample = windows(work, usable_rows(p), size, quantiles=tuple((j + 0.5) / k for j in range(k)))
        normalize = str(p.option("fo_normalize", "raw"))

        def few(dev):
            return DevSet(records=tuple(dev.records[:FO_DEV_SAMPLE]), source=dev.source)
        dev = few(load_targets(p.option("target")))
        tasks = [(n, few(t)) for n, t in target_tasks(p.option("target"))] if normalize == "less" else None
        # Fitted twice, each in its own scratch cache (nothing reused), and the second timed: the
        # first pays the one-off costs a real run pays once (kernel creation for new shapes,
        # first autocast call, allocator growth), which on a 16-row sample were 2.5-6x its work.
        for _ in range(2):
            with tempfile.TemporaryDirectory(prefix="shedkit-plan-") as scratch:
                fit = get_valuation("first-order")(
                    model=m.spec, train_config=config, warmup_rows=len(sample), checkpoints=checkpoints,
                    last_layers=_fo_layers(p), normalize=normalize,
                    center=p.option("fo_center") is not False, center_rows=0,
                    task_reduce=str(p.option("fo_task_reduce", "max")),
                    projection_dim=int(p.option("fo_projection_dim", 0)),
                    batch_size=int(p.option("fo_batch_size", 8)),
                    cache_dir=scratch, seed=p.ctx.seed, device=p.option("device"), progress=False,
                ).fit([p.ctx.records[i] for i in sample], dev, tasks=tasks)
        dev_tokens = _dev_tokens(p, dev, config)
        return {"timings": dict(fit.stats_.get("timings", {})), "rows": len(sample), "checkpoints": checkpoints,
                "warmup_tokens": float(config.epochs) * clipped(lengths, config.max_length, sample),
                "tokens": clipped(lengths, config.max_length, sample), "dev_rows": len(dev.records),
                "dev_tokens": dev_tokens,
                "task_tokens": sum(_dev_tokens(p, t, config) for _, t in tasks) if tasks else 0.0,
                "peak_gb": measured_peak_gb()}
    return p.once(("fo-sample", config), measure)


def _dev_tokens(p: Planner, dev, config) -> float:
    """Tokens of a dev set as it is scored/differentiated: its rows encoded (loss), or each
    multiple-choice item's query + choice pairs."""
    from shedkit.models.encode import encode_options, encode_record

    tok = lm(p).tokenizer
    if dev.records:
        return float(sum(min(len(encode_record(tok, r, config.max_length, **encode_options(config))),
                             config.max_length) for r in dev.records))
    return float(sum(len(tok(item.query + " " + choice)["input_ids"]) for item in dev.items for choice in item.choices))


def _fo_warmup_stage(p: Planner, s: dict[str, Any], rows: Sequence[int], config) -> Stage:
    """First-order's warm-up fine-tune, timed by the sample fit's own warm-up: the same LoRA
    (only ``--fo-layers`` last layers, so a shorter backward than a plain fine-tune's), scaled
    by the tokens trained."""
    from shedkit.models.finetune import _epoch_batches

    seconds, tokens = float(s["timings"].get("warmup", 0.0)), float(s.get("warmup_tokens", 0.0))
    rate = None
    if seconds > 0 and tokens > 0:
        rate = {"rate": seconds / tokens, "steps": len(_epoch_batches(s["rows"], config, int(p.ctx.seed))),
                "rows": s["rows"], "tokens": tokens, "seconds": seconds, "peak_gb": s["peak_gb"],
                "what": "the warm-up of the first-order sample fit (the second of two fits)"}
    return fine_tune_stage(p, "warmup_fine_tune", f"first-order warm-up: LoRA fine-tune on {len(rows):,} pool rows",
                           rows, config, rate, adapted_layers=_fo_layers(p), weight_copies=1)


def first_order_stages(p: Planner) -> list[Stage]:
    """First-order values: warm-up fine-tune, dev gradients, (less: target directions and the
    centre), row gradients at every checkpoint."""
    from shedkit.pipeline.first_order_values import target_tasks
    from shedkit.pipeline.options import train_config_from
    from shedkit.pipeline.targets import load_targets

    m, config = lm(p), train_config_from(p.ctx)
    dev = load_targets(p.option("target"))
    usable = usable_rows(p)
    share = float(p.option("fo_warmup", 0.05))
    count = min(len(usable), int(share) if share >= 1 else max(1, round(share * len(usable))))
    warm_rows = np.random.default_rng(p.ctx.seed).choice(usable, size=count, replace=False).tolist()
    s = _fo_sample(p, config)
    stages = [_fo_warmup_stage(p, s, sorted(warm_rows), config)]
    ck = s["checkpoints"]
    lengths, how = row_tokens(p, "record", config)
    size, width = int(p.option("fo_batch_size", 8)), longest(lengths, usable, config.max_length)
    adapted = _fo_layers(p)
    act = training_gb(m, size, width, layers=adapted)
    # the LoRA model shares the base's frozen weights (models.gradients.frozen_weights_copy)
    memory = max(s["peak_gb"], p.baseline_gb + m.weights_gb + act)
    memory_from = (f"base {m.weights_gb:.3f} GB (the LoRA model shares its frozen weights) + activations of a {size}-row "
                   f"batch padded to {width:.0f} tokens through {adapted or m.layers} adapted layer(s) {act:.2f} GB; "
                   f"measured peak after the sample fit {s['peak_gb']:.2f} GB")
    timed_ = s["timings"]

    def stage(name, does, units_name, tokens, sample_tokens, seconds_key, rows):
        sample_seconds = float(timed_.get(seconds_key, 0.0))
        rate = sample_seconds / max(sample_tokens, 1.0)
        return Stage(name, does, f"{rows:,} {units_name} x {ck} checkpoints, {number(tokens * ck)} tokens",
                     {"rows": rows, "checkpoints": ck, "tokens": tokens * ck}, rate * tokens,
                     f"timed a first-order fit of {s['rows']} pool rows and {s['dev_rows']} dev rows: {seconds_key} "
                     f"{sample_seconds:.3g} s for {number(sample_tokens)} tokens = {rate:.3g} s/token x "
                     f"{number(tokens)} tokens (tokens: {how})",
                     memory, memory_from,
                     flops=train_flops(m.params, tokens * ck))

    dev_tokens = _dev_tokens(p, dev, config)
    stages.append(stage("dev_gradients", "gradient of the dev loss at each checkpoint", "dev rows", dev_tokens,
                        s["dev_tokens"], "dev_gradients", len(dev)))
    if str(p.option("fo_normalize", "raw")) == "less":
        tasks = target_tasks(p.option("target"))
        task_tokens = sum(_dev_tokens(p, t, config) for _, t in tasks)
        stages.append(stage("target_directions", "LESS: per-example dev gradients of each target file",
                            "dev rows", task_tokens, s["task_tokens"], "target_directions",
                            sum(len(t) for _, t in tasks)))
        center_rows = int(p.option("fo_center_rows", 256))
        center = usable if center_rows <= 0 or center_rows >= len(usable) else usable[:center_rows]
        mean = clipped(lengths, config.max_length, usable) / max(len(usable), 1)
        stages.append(stage("center_gradients", "LESS: the pool's mean Adam update direction (the centre)",
                            "pool rows", mean * len(center), s["tokens"], "center", len(center)))
    stages.append(stage("row_gradients", "each row's gradient against the dev gradient at each checkpoint "
                                         "(FLOPs: a full backward, an upper bound)",
                        "rows", clipped(lengths, config.max_length, usable), s["tokens"], "row_gradients", len(usable)))
    for st in stages[1:]:
        st.notes.append("first-order's row cache is not consulted: cached rows are counted as work")
    return stages


# -- SHED's proxy fine-tunes ------------------------------------------------------------------

def proxy_fine_tunes_stage(p: Planner, proxies: Sequence[int], proxies_from: str) -> Stage:
    """SHED's valuation: at most N fine-tunes (its estimator and stopping rules), one timed
    for real (``shed_values.valuation_plan``), on the chosen backend's workers."""
    from shedkit.models.objectives import Objective
    from shedkit.pipeline.options import train_config_from
    from shedkit.pipeline.shed_values import valuation_plan
    from shedkit.pipeline.targets import load_targets
    from shedkit.value.planning import format_plan

    from shedkit.models.device import pin_device
    from shedkit.models.loading import shared_model

    m, config = lm(p), train_config_from(p.ctx)
    dev = load_targets(p.option("target"))
    # the fine-tunes load the model pinned to a device (SubsetScore): load it that way here, so the
    # timed fine-tune does not include loading it (the run loads it once, not once per fine-tune)
    m.model, m.tokenizer = shared_model(m.spec, device=pin_device(p.option("device")))
    plan = valuation_plan(p.ctx, [p.ctx.records[i] for i in proxies], dev)
    timing, planned = plan["timing"], plan["planned_evaluations"]
    lengths, how = row_tokens(p, "record", config)
    per_player = clipped(lengths, config.max_length, proxies) / max(len(proxies), 1)
    train_tokens = float(config.epochs) * per_player * timing["subset_size"]
    objective = Objective.of(p.option("objective", "auto")).resolve(dev)
    dev_tokens = _dev_tokens(p, dev, replace(config, max_length=objective.score.max_length))
    per_eval = train_flops(m.params, train_tokens) + forward_flops(m.params, dev_tokens)
    act = training_gb(m, config.batch_size, longest(lengths, proxies, config.max_length))
    peak = measured_peak_gb()
    workers = max(1, int(plan["workers"]))
    return Stage(
        "proxy_fine_tunes", f"SHED valuation: {plan['estimator']} over {plan['players']} cluster proxies "
                            f"({proxies_from}); each fine-tune is followed by scoring the dev set",
        ("at most " + f"{planned:,} fine-tunes" if planned is not None else "fine-tunes bounded by time/quality")
        + f", {plan['players']} players",
        {"fine_tunes": planned if planned is not None else float("nan"), "players": plan["players"],
         "train_tokens_per_fine_tune": train_tokens, "dev_tokens": dev_tokens, "workers": workers},
        plan["estimated_seconds"],
        f"timed one real fine-tune on {timing['subset_size']} players + dev scoring: {timing['seconds']:.3g} s"
        + (" (recorded in the cache)" if timing["from_cache"] else "")
        + (f" x at most {planned} / {workers} worker(s)" if planned is not None else "; --max-time bounds it")
        + (", capped by --max-time" if plan["max_time"] else ""),
        max(peak, p.baseline_gb + (2 * m.weights_gb + act) * workers),
        f"base + fine-tuned copy 2 x {m.weights_gb:.3f} GB + activations {act:.3f} GB, per worker; "
        f"measured peak after the timed fine-tune {peak:.2f} GB",
        flops=per_eval * planned if planned is not None else None,
        gpu_from="" if planned is not None else "unknown: no count of fine-tunes (bounded by time or quality only)",
        details=plan, notes=format_plan(plan).splitlines() + [f"players' tokens: {how}"])


# -- LoBaSS's reference -----------------------------------------------------------------------

def reference_stages(p: Planner) -> list[Stage]:
    """LoBaSS's reference (trained on the pool, read from the cache, or the user's) and its
    losses over the pool (priced like the base model's: the same architecture)."""
    from pathlib import Path

    from shedkit.models.loading import model_identity
    from shedkit.pipeline.options import train_config_from
    from shedkit.pipeline.reference_model import reference_key

    m, config = lm(p), train_config_from(p.ctx)
    user = p.option("reference")
    load_memory = p.baseline_gb + 2 * m.weights_gb
    if user is not None:
        ref_id = model_identity(str(user))
        first = Stage("load_reference", f"load the given reference {user}", "1 model", {"models": 1}, m.seconds,
                      "assumed: as long as loading the base model (measured)", load_memory,
                      "derived: base + reference weights")
    else:
        key = reference_key(m.spec, config, p.ctx.records, p.ctx.seed)
        out = Path(p.ctx.cache_dir) / "references" / key
        ref_id = f"lobass-reference:{key}"
        if (out / "shedkit_train.json").exists():
            first = Stage("reference_fine_tune", f"LoBaSS reference: cached at {out}, loaded", "0 steps (cached)",
                          {"steps": 0}, m.seconds, "assumed: loading it takes as long as the base model (measured)",
                          load_memory, "derived: base + reference weights")
        else:
            first = fine_tune_stage(p, "reference_fine_tune", "LoBaSS reference: the base model fine-tuned on the "
                                                              "whole pool", usable_rows(p), config)
    return [first, loss_stage(p, "reference_losses", "the reference's response loss of every row", model_id=ref_id)]
