"""First-order row values: each row's influence on the target dev loss, from LoRA gradients.

    value(z) = Σ_t η_t <∇ℓ_dev(θ_t), ∇ℓ(z; θ_t)>                       (normalize="raw")
    value(z) = Σ_t η_t cos(∇ℓ_dev(θ_t), ∇ℓ(z; θ_t))                     (normalize="cosine")
    value(z) = max_k Σ_t w_t mean_{j in task k} cos(Γ_t(g_z) - μ_t, g_j)  (normalize="less")

over ``checkpoints`` snapshots θ_t of one short warm-up LoRA fine-tune of the proxy model on a
seeded random share of the pool (``warmup_rows``), η_t the mean learning rate of the segment
that ends at θ_t (TracIn; LESS uses the cosine form; under a first-order utility the game is
additive, so a row's Shapley value is its own term: first-order In-Run Data Shapley). A
positive value means a gradient step on the row lowers the dev loss. ℓ(z) is the row's mean
response-token loss, ℓ_dev the token-weighted mean over the dev rows (the ``loss`` objective).

Cost: one warm-up fine-tune, then per checkpoint one forward + backward over every row (the
backward only through the adapted layers: ``last_layers`` adapts the last few decoder layers
only, which shortens it). Everything is cached under ``<cache_dir>/first-order/<key>/``
(``key`` hashes the model, the warm-up config and rows, the seed, the dev set and every
setting that changes a number): the checkpoints' adapter weights (safetensors), the dev
gradient's norm per checkpoint, and per row its <g_z, g_dev> and |g_z|^2 at every checkpoint
and its target-token count (JSONL parts written atomically every ``chunk_rows`` rows), plus
the projected gradients (``projection_dim`` > 0, ``.npz`` parts). Each batch of rows runs
the frozen layers below the adapters once and the adapted layers once per checkpoint. A rerun computes no gradient; a killed run
resumes from its last finished chunk.

Length bias (measured on noisy-mix-v1, every 3rd row, SmolLM2-135M, Alpaca dev target, LoRA
on the last 4 layers, 2 checkpoints, max_length 128; bench/results/row-value): both forms
favour short responses -- Spearman of value with response tokens is -0.60 raw and -0.44
cosine (raw vs cosine ranks: 0.94). A row's loss is a mean over its tokens, so a short row's
gradient is dominated by the tokens every response shares (the end-of-turn marker, opening
words), which the dev gradient shares too; templated one-line answers (boilerplate, median 7
tokens) get the highest values. Cosine normalisation removes the norm, not that direction.

``normalize="less"`` (issue 23: LESS, Xia et al. 2024, §3.2, and beyond) removes what it can
of that bias:
- g_z = ∇ℓ(z; θ_t), the gradient of the row's MEAN response-token loss (nothing is summed over
  tokens anywhere: rows, dev rows and the warm-up's batches all use per-token means);
- Γ_t(g) = (m'/(1-β1^s)) / (sqrt(v'/(1-β2^s)) + eps), m' = β1 m + (1-β1) g, v' = β2 v + (1-β2) g²,
  s = step + 1: the AdamW update direction at checkpoint t, from the optimiser moments (m, v)
  saved with it (``models.gradients.adam_direction``; LESS's Γ with torch's bias correction);
  the target side stays plain SGD gradients, as in LESS;
- μ_t, the mean Γ_t(g) over a seeded sample of ``center_rows`` pool rows (all rows if fewer),
  is subtracted (``center``; off: LESS as published), so a direction every row shares (end the
  answer, open it the usual way) does not decide the ranking;
- cosines: each row's centred direction and each dev row's gradient are unit-normalised; a
  task's value is the mean over its dev rows (one vector per task suffices: the mean of its
  rows' unit gradients), w_t = η_t / Σ η (LESS's normalised lr weights), and the tasks (one
  per target file) are combined by max (LESS), mean, or max of per-task z-scores (``task_reduce``).
Per row only <Γ g, T_k>, |Γ g|^2 and <Γ g, μ> are kept (``less_values`` assembles the value),
under ``<key>/less-<key2>/`` (``key2``: the tasks and the centre's rows), with the target
directions and μ per checkpoint (safetensors); the checkpoints' AdamW state sits next to
their weights as ``adam-<t>.safetensors``. A ``less`` fit also fills the raw and cosine
values (same pass). Cost over raw: one more pass over the centre's rows and per-example (still
batched) dev gradients. Its effect on the length bias is not measured yet on noisy-mix-v1;
``raw`` stays the default.

Rows with an empty response, or none of whose response survives ``max_length``, get NaN.
The estimator contract: ``__init__`` stores parameters, ``fit(records, dev)`` returns self
with ``result_`` (a ``ValuationResult.from_values``), ``raw_``, ``cosine_``, ``n_tokens_``
(per row, input order), ``less_`` and ``less_tasks_`` (``[tasks, rows]``; None unless
``normalize="less"``), ``task_names_`` and ``stats_`` (gradients computed / read from the
cache, seconds). ``fit(records, dev, tasks=None)``: ``tasks`` are the less targets (default
one, ``dev``).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from shedkit.errors import ShedkitError
from shedkit.util.atomic import atomic_path, atomic_write_text

NORMALIZE = ("raw", "cosine", "less")
TASK_REDUCE = ("max", "mean", "max-z")
FIRST_ORDER_VERSION = "1"
LESS_VERSION = "1"  # of the ``less-<key>`` sub-cache (its files and what they hold)


class FirstOrderValuation:
    """First-order (TracIn/LESS) values of every row against a target dev set."""

    def __init__(
        self,
        model: str = "smollm2-135m",
        train_config=None,
        *,
        warmup_rows: float | int = 0.05,
        checkpoints: int = 2,
        last_layers: int | None = None,
        normalize: str = "raw",
        center: bool = True,
        center_rows: int = 256,
        task_reduce: str = "max",
        projection_dim: int = 0,
        batch_size: int = 8,
        max_batch_tokens: int = 4096,
        chunk_rows: int = 256,
        cache_dir: str | os.PathLike | None = None,
        seed: int = 0,
        device=None,
        progress: bool = True,
    ):
        self.model = model
        self.train_config = train_config
        self.warmup_rows = warmup_rows
        self.checkpoints = checkpoints
        self.last_layers = last_layers
        self.normalize = normalize
        self.center = center
        self.center_rows = center_rows
        self.task_reduce = task_reduce
        self.projection_dim = projection_dim
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.chunk_rows = chunk_rows
        self.cache_dir = cache_dir
        self.seed = seed
        self.device = device
        self.progress = progress

    # -- public --------------------------------------------------------------------------
    def fit(self, records: Sequence, dev, tasks: Sequence | None = None) -> "FirstOrderValuation":
        """Value ``records`` against ``dev``. ``tasks`` (``normalize="less"`` only): the target
        tasks, each a DevSet/path/records or a ``(name, that)`` pair, valued separately and
        combined by ``task_reduce``; default one task, ``dev`` itself."""
        from shedkit.models.config import TrainConfig
        from shedkit.models.objectives import DevSet
        from shedkit.value.result import ValuationResult

        if self.normalize not in NORMALIZE:
            raise ShedkitError(f"normalize must be one of {NORMALIZE}, not {self.normalize!r}")
        if self.task_reduce not in TASK_REDUCE:
            raise ShedkitError(f"task_reduce must be one of {TASK_REDUCE}, not {self.task_reduce!r}")
        if int(self.checkpoints) < 1:
            raise ShedkitError("first-order valuation needs at least 1 checkpoint")
        config = self.train_config or TrainConfig(epochs=2.0)
        if config.method != "lora":
            raise ShedkitError("first-order values are taken over LoRA adapters: use train method 'lora'")
        dev = DevSet.of(dev)
        if not dev.records:
            raise ShedkitError("first-order values need a dev set of instruction/response rows (a loss target)")
        task_sets = _tasks(dev, tasks) if self.normalize == "less" else None
        start = time.perf_counter()
        work = _Work(self, records, dev, config, task_sets)
        per_ckpt = work.run()
        n = len(records)
        raw, cos = np.zeros(n), np.zeros(n)
        for lr, dev_norm2, dots, norms2 in per_ckpt:
            raw += lr * dots
            with np.errstate(invalid="ignore", divide="ignore"):
                cos += lr * dots / np.sqrt(norms2 * dev_norm2)
        self.raw_, self.cosine_, self.n_tokens_ = raw, cos, work.n_tokens
        self.features_ = work.features
        self.less_ = self.less_tasks_ = None
        self.task_names_ = [name for name, _ in task_sets] if task_sets else []
        if work.less is not None:
            self.less_, self.less_tasks_ = less_values(
                **work.less, weights=[c[0] for c in per_ckpt], center=bool(self.center), reduce=self.task_reduce)
        self.stats_ = {**work.stats, "seconds": time.perf_counter() - start}
        values = {"raw": raw, "cosine": cos, "less": self.less_}[self.normalize]
        self.result_ = ValuationResult.from_values(
            [r.id for r in records], values, counts=np.full(n, len(per_ckpt), dtype=np.int64),
            estimator="first-order", params=self.params(), seed=int(self.seed), stopped_by="all rows",
            n_evaluations=0, elapsed=self.stats_["seconds"], cache_key=work.key,
        )
        return self

    def params(self) -> dict[str, Any]:
        out = {
            "model": self.model, "warmup_rows": self.warmup_rows, "checkpoints": int(self.checkpoints),
            "last_layers": self.last_layers, "normalize": self.normalize, "projection_dim": int(self.projection_dim),
            "train": (self.train_config.to_dict() if self.train_config is not None else None),
        }
        if self.normalize == "less":
            out.update(center=bool(self.center), center_rows=int(self.center_rows), task_reduce=self.task_reduce,
                       tasks=list(getattr(self, "task_names_", [])))
        return out


def less_values(task_dots, norms2, center_dots, center_norm2, center_task_dots, weights, center: bool = True,
                reduce: str = "max") -> tuple[np.ndarray, np.ndarray]:
    """The ``less`` values from per-row statistics of the Adam update directions u = Γ_t(g_z).

    task_dots        [checkpoints, rows, tasks]  <u, T_k>, T_k task k's target direction (the
                                                 mean of its dev rows' unit gradients)
    norms2           [checkpoints, rows]         |u|^2
    center_dots      [checkpoints, rows]         <u, μ>, μ the pool's mean u
    center_norm2     [checkpoints]               |μ|^2
    center_task_dots [checkpoints, tasks]        <μ, T_k>
    weights          [checkpoints]               η_t, the learning rates (normalised to sum 1, as LESS does)

    With c = u - μ (``center``; else c = u), value_k = Σ_t w_t <c, T_k> / |c| (the mean over task
    k's dev rows of cos(c, g_j), lr-weighted over checkpoints), and the row's value is the max
    (LESS) or mean over tasks of value_k. <c, T_k> = <u, T_k> - <μ, T_k> and
    |c|^2 = |u|^2 - 2 <u, μ> + |μ|^2, so no vector is kept per row. ``max-z`` standardises each
    task's values over the rows (mean 0, sd 1) before the max: a task whose dev rows agree (one
    answer format, GSM8K) has a long mean direction and larger cosines than a diverse one
    (Alpaca), so the plain max hands the whole budget to it; on the z scale each task's best rows
    compete on equal terms. Returns (values [rows],
    per-task values [tasks, rows]); NaN where a row has no gradient (or c = 0)."""
    dots = np.asarray(task_dots, dtype=np.float64)
    sq = np.asarray(norms2, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if dots.ndim != 3 or sq.shape != dots.shape[:2] or w.shape != dots.shape[:1]:
        raise ShedkitError("less_values: task_dots must be [checkpoints, rows, tasks], norms2 [checkpoints, rows], "
                           "weights [checkpoints]")
    if not np.all(np.isfinite(w)) or w.sum() <= 0:
        raise ShedkitError(f"the checkpoints' learning rates must be finite and sum to > 0, got {w.tolist()}")
    w = w / w.sum()
    if center:
        dots = dots - np.asarray(center_task_dots, dtype=np.float64)[:, None, :]
        sq = sq - 2 * np.asarray(center_dots, dtype=np.float64) + np.asarray(center_norm2, dtype=np.float64)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.sqrt(np.where(sq > 0, sq, np.nan))
        per_task = np.einsum("t,tnk->kn", w, dots / norm[:, :, None])
    if reduce == "max-z":  # each task's values standardised over the pool first, then the max
        with np.errstate(invalid="ignore", divide="ignore"):
            sd = np.nanstd(per_task, axis=1, keepdims=True)
            z = (per_task - np.nanmean(per_task, axis=1, keepdims=True)) / np.where(sd > 0, sd, 1.0)
        return z.max(axis=0), per_task
    combined = per_task.max(axis=0) if reduce == "max" else per_task.mean(axis=0)
    return combined, per_task


def _tasks(dev, tasks) -> list[tuple[str, Any]]:
    """``[(name, DevSet)]``: ``tasks`` as given (names ``task1``... where none is given), or ``dev``."""
    from shedkit.models.objectives import DevSet

    if tasks is None:
        return [("target", dev)]
    out = []
    for k, task in enumerate(tasks):
        name, task = task if isinstance(task, tuple) else (f"task{k + 1}", task)
        task = DevSet.of(task)
        if not task.records:
            raise ShedkitError(f"target task {name!r} has no instruction/response rows (a loss target)")
        out.append((str(name), task))
    if not out:
        raise ShedkitError("no target task given")
    return out


class _Work:
    """One fit: settings resolved, cache opened, model loaded only when something is missing."""

    def __init__(self, owner: FirstOrderValuation, records: Sequence, dev, config, tasks=None):
        from shedkit.models.config import MODEL_LAYER_VERSION, records_fingerprint, stable_hash
        from shedkit.models.device import resolve_device, resolve_precision
        from shedkit.models.encode import has_empty_response
        from shedkit.models.loading import model_identity

        self.o, self.records, self.dev, self.config = owner, records, dev, config
        usable = [i for i, r in enumerate(records) if not has_empty_response(r)]
        self.warmup = self._warmup_positions(usable)
        device = resolve_device(owner.device)
        self.settings = {
            "kind": "first-order", "version": FIRST_ORDER_VERSION, "layer_version": MODEL_LAYER_VERSION,
            "model": model_identity(str(owner.model)), "train": config.to_dict(),
            "precision": resolve_precision(config.precision, device), "device_type": device.type,
            "warmup": records_fingerprint([records[i] for i in self.warmup]), "seed": int(owner.seed),
            "checkpoints": int(owner.checkpoints), "last_layers": owner.last_layers,
            "dev": dev.fingerprint(),
        }
        self.key = stable_hash(self.settings)
        root = Path(owner.cache_dir) if owner.cache_dir is not None else _default_cache()
        self.dir = root / "first-order" / self.key
        self.usable = usable
        self.n_tokens = np.full(len(records), np.nan)
        self.features = None
        self.stats = {"row_gradients_computed": 0, "row_gradients_cached": 0, "warmup": "cached",
                      "cache_dir": str(self.dir), "timings": {}}
        self._model = None
        # normalize="less": its own sub-cache, keyed by the tasks and the centre's rows (the
        # warm-up, checkpoints and their Adam states are the main cache's)
        self.tasks, self.less, self.less_dir = tasks, None, None
        if tasks is not None:
            self.center_pos = self._center_positions(usable)
            self.less_settings = {"version": LESS_VERSION, "tasks": [t.fingerprint() for _, t in tasks],
                                  "center": records_fingerprint([records[i] for i in self.center_pos])}
            self.less_dir = self.dir / f"less-{stable_hash(self.less_settings)}"
            self.stats["less_cache_dir"] = str(self.less_dir)

    def _center_positions(self, usable: list[int]) -> list[int]:
        """The rows whose mean update direction is the centre: a seeded sample of
        ``center_rows`` usable rows (every usable row when ``center_rows`` is 0 or at least
        their number)."""
        count = int(self.o.center_rows)
        if count <= 0 or count >= len(usable):
            return list(usable)
        rng = np.random.default_rng([int(self.o.seed), 2])
        return sorted(rng.choice(usable, size=count, replace=False).tolist())

    def _warmup_positions(self, usable: list[int]) -> list[int]:
        share = self.o.warmup_rows
        count = int(share) if float(share) >= 1 else max(1, round(float(share) * len(usable)))
        count = min(count, len(usable))
        if count < 1:
            raise ShedkitError("no row with a response to warm up on")
        rng = np.random.default_rng(self.o.seed)
        return sorted(rng.choice(usable, size=count, replace=False).tolist())

    # -- the model, loaded lazily --------------------------------------------------------
    def model(self):
        """``(base model, tokenizer)``, loaded on first use (a fully cached fit never loads it)."""
        if self._model is None:
            from shedkit.models.loading import shared_model

            self._model = shared_model(str(self.o.model), device=self.o.device)
        return self._model

    def run(self) -> list[tuple[float, float, np.ndarray, np.ndarray]]:
        """Per checkpoint: (η_t, |g_dev|^2, dots, norms2), dots/norms2 NaN for unusable rows."""
        cached = _RowCache(self.dir, self.o.checkpoints, self.o.projection_dim, self.o.seed)
        less = _LessCache(self.less_dir, self.o.checkpoints, len(self.tasks)) if self.tasks is not None else None
        ids = [self.records[i].id for i in self.usable]
        if (cached.dev_norm2() is None or cached.missing(ids)
                or (less is not None and (less.summary() is None or less.missing(ids)))):
            self._compute(cached, less)
        meta = self._read_json(self.dir / "checkpoints.json")
        entries, dev_norm2 = cached.entries(), cached.dev_norm2()
        n, n_ck = len(self.records), self.o.checkpoints
        dots, norms2 = np.full((n_ck, n), np.nan), np.full((n_ck, n), np.nan)
        for i in self.usable:
            e = entries[self.records[i].id]
            self.n_tokens[i] = e["n_tokens"]
            if e["n_tokens"] > 0:
                dots[:, i], norms2[:, i] = e["dot"], e["norm2"]
        if self.o.projection_dim:
            self.features = cached.features([r.id for r in self.records])  # [checkpoints, rows, dim]
        self.stats["row_gradients_cached"] = n_ck * len(self.usable) - self.stats["row_gradients_computed"]
        if less is not None:
            self.less = self._less_stats(less)
        return [(float(meta["lr"][t]), float(dev_norm2[t]), dots[t], norms2[t]) for t in range(n_ck)]

    def _less_stats(self, less: "_LessCache") -> dict[str, np.ndarray]:
        """The arguments of ``less_values`` (but the weights) from the less sub-cache."""
        summary, entries = less.summary(), less.entries()
        n, n_ck, n_tasks = len(self.records), self.o.checkpoints, len(self.tasks)
        task_dots = np.full((n_ck, n, n_tasks), np.nan)
        norms2, center_dots = np.full((n_ck, n), np.nan), np.full((n_ck, n), np.nan)
        for i in self.usable:
            e = entries[self.records[i].id]
            if e["n_tokens"] > 0:
                task_dots[:, i], norms2[:, i], center_dots[:, i] = e["task_dot"], e["norm2"], e["center_dot"]
        self.stats["less"] = {"tasks": summary["tasks"], "task_rows": summary["task_rows"],
                              "center_rows": summary["center_rows"]}
        return {"task_dots": task_dots, "norms2": norms2, "center_dots": center_dots,
                "center_norm2": np.asarray(summary["center_norm2"], dtype=np.float64),
                "center_task_dots": np.asarray(summary["center_task_dots"], dtype=np.float64)}

    def _compute(self, cache: "_RowCache", less: "_LessCache | None" = None) -> None:
        from shedkit.models.encode import encode_record
        from shedkit.models.gradients import (
            CountSketch, attach_lora, checkpoint_dev_gradients, checkpoint_gradient_stats, frozen_weights_copy,
            lora_matrices, warmup_checkpoints,
        )
        from shedkit.models.scoring import pad_id_of

        base, tok = self.model()
        # the base's weights shared, not copied: LoRA never writes to them, and the base stays usable
        model = attach_lora(frozen_weights_copy(base), self.config, self.o.last_layers, seed=self.o.seed)
        states, adams = self._checkpoints(model, tok, self._read_json(self.dir / "checkpoints.json"),
                                          warmup_checkpoints, need_adam=less is not None)
        cfg = self.config
        pad = pad_id_of(tok)
        timings = self.stats["timings"]
        t0 = time.perf_counter()
        dev_seqs = [encode_record(tok, r, cfg.max_length, cfg.template) for r in self.dev.records]
        devs = checkpoint_dev_gradients(model, dev_seqs, states, pad, cfg.precision, self.o.batch_size,
                                        self.o.max_batch_tokens)
        timings["dev_gradients"] = time.perf_counter() - t0
        dev_norm2 = [float(sum(float((g.double() ** 2).sum()) for g in d.values())) for d in devs]
        pre = self._preconditioned(model, tok, states, adams, less) if less is not None else None
        sketch = None
        if self.o.projection_dim:
            sketch = CountSketch([(n, tuple(m.weight.shape)) for n, m in lora_matrices(model)],
                                 int(self.o.projection_dim), seed=self.o.seed)
        ids = [self.records[i].id for i in self.usable]
        raw_todo = set(cache.missing(ids))
        less_todo = set(less.missing(ids)) if less is not None else set()
        todo_pos = [i for i in self.usable if self.records[i].id in raw_todo or self.records[i].id in less_todo]
        t0 = time.perf_counter()
        for c in range(0, len(todo_pos), self.o.chunk_rows):
            chunk = todo_pos[c: c + self.o.chunk_rows]
            seqs = [encode_record(tok, self.records[i], cfg.max_length, cfg.template) for i in chunk]
            ok = [k for k, s in enumerate(seqs) if s.n_targets > 0]
            stats = None
            if ok:
                stats = checkpoint_gradient_stats(
                    model, [seqs[k] for k in ok], list(zip(states, devs)), pad, cfg.precision, self.o.batch_size,
                    self.o.max_batch_tokens, sketch=sketch, progress=self.o.progress,
                    desc=f"first-order gradients, rows {c + 1}-{c + len(chunk)} of {len(todo_pos)}",
                    **({"preconditioned": pre} if pre is not None else {}),
                )
            entries = [{"id": self.records[i].id, "n_tokens": 0, "dot": None, "norm2": None} for i in chunk]
            pre_entries = [{"id": self.records[i].id, "n_tokens": 0, "task_dot": None, "norm2": None,
                            "center_dot": None} for i in chunk]
            for j, k in enumerate(ok):
                entries[k].update(n_tokens=int(stats.n_tokens[j]), dot=stats.dots[:, j].tolist(),
                                  norm2=stats.norms2[:, j].tolist())
                if pre is not None:
                    pre_entries[k].update(n_tokens=int(stats.n_tokens[j]), task_dot=stats.pre_dots[:, j].tolist(),
                                          norm2=stats.pre_norms2[:, j].tolist(),
                                          center_dot=stats.pre_center_dots[:, j].tolist())
            # write only what was missing: a row cached for raw/cosine keeps its numbers
            keep = [j for j, k in enumerate(ok) if entries[k]["id"] in raw_todo]
            feats = stats.features.transpose(1, 0, 2)[keep] if (stats is not None and sketch) else None
            raw_entries = [e for e in entries if e["id"] in raw_todo]
            if raw_entries:
                cache.add(raw_entries, [entries[ok[j]]["id"] for j in keep], feats)
            if less is not None:
                less.add([e for e in pre_entries if e["id"] in less_todo])
            self.stats["row_gradients_computed"] += len(ok) * len(states)
        timings["row_gradients"] = time.perf_counter() - t0
        cache.set_dev_norm2(dev_norm2)
        del model

    def _preconditioned(self, model, tok, states, adams, less: "_LessCache") -> list:
        """Per checkpoint the ``PreconditionedTargets``: the task directions and the centre
        from the less sub-cache, else computed (and saved) now; the summary written."""
        from shedkit.models.encode import encode_record
        from shedkit.models.gradients import (
            PreconditionedTargets, checkpoint_preconditioned_mean, checkpoint_task_directions,
        )
        from shedkit.models.scoring import pad_id_of

        cfg, pad, timings = self.config, pad_id_of(tok), self.stats["timings"]
        targets, fresh = less.load("targets"), False
        if targets is None:
            fresh = True
            t0 = time.perf_counter()
            task_seqs = [[encode_record(tok, r, cfg.max_length, cfg.template) for r in t.records]
                         for _, t in self.tasks]
            targets = checkpoint_task_directions(model, task_seqs, states, pad, cfg.precision, self.o.batch_size,
                                                 self.o.max_batch_tokens)
            less.save("targets", targets)
            timings["target_directions"] = time.perf_counter() - t0
        centers = less.load("center")
        if centers is None:
            fresh = True
            t0 = time.perf_counter()
            seqs = [encode_record(tok, self.records[i], cfg.max_length, cfg.template) for i in self.center_pos]
            centers = checkpoint_preconditioned_mean(model, seqs, states, adams, pad, cfg.precision, self.o.batch_size,
                                                     self.o.max_batch_tokens, progress=self.o.progress)
            less.save("center", centers)
            timings["center"] = time.perf_counter() - t0
            self.stats["center_gradients_computed"] = len(seqs) * len(states)
        if fresh or less.summary() is None:
            center_rows = sum(1 for i in self.center_pos
                              if encode_record(tok, self.records[i], cfg.max_length, cfg.template).n_targets > 0)
            cpu = lambda x: x.detach().double().cpu()  # noqa: E731  (one may come from the cache, one fresh)
            less.set_summary({
                "tasks": [name for name, _ in self.tasks], "task_rows": [len(t.records) for _, t in self.tasks],
                "center_rows": center_rows, "settings": self.less_settings,
                "center_norm2": [float(sum(float((cpu(c[k]) ** 2).sum()) for k in c)) for c in centers],
                "center_task_dots": [[float(sum(float((cpu(c[k]) * cpu(d[k][j])).sum()) for k in c))
                                      for j in range(len(self.tasks))] for c, d in zip(centers, targets)],
            })
        return [PreconditionedTargets(a, d, c) for a, d, c in zip(adams, targets, centers)]

    def _checkpoints(self, model, tok, meta, warmup_checkpoints, need_adam: bool = False):
        """The warm-up's adapter weights per checkpoint, and (``need_adam``) the AdamW state at
        each (else None): from the cache, else trained and saved (weights in
        ``checkpoint-<t>.safetensors``, optimiser state in ``adam-<t>.safetensors``, never a
        pickle). A cache written before the Adam state was kept has the weights only: the
        warm-up is re-run for its optimiser state, which must reproduce the cached weights."""
        from safetensors.torch import load_file, save_file

        from shedkit.models.gradients import load_adam_state, save_adam_state

        files = [self.dir / f"checkpoint-{t}.safetensors" for t in range(self.o.checkpoints)]
        adam_files = [self.dir / f"adam-{t}.safetensors" for t in range(self.o.checkpoints)]
        have = meta is not None and all(f.exists() for f in files)
        if have and (not need_adam or all(f.exists() for f in adam_files)):
            states = [load_file(str(f)) for f in files]
            return states, ([load_adam_state(f) for f in adam_files] if need_adam else None)
        t0 = time.perf_counter()
        cks = warmup_checkpoints(model, tok, [self.records[i] for i in self.warmup], self.config,
                                 int(self.o.checkpoints), seed=self.o.seed, progress=self.o.progress)
        self.stats["timings"]["warmup"] = time.perf_counter() - t0
        self.dir.mkdir(parents=True, exist_ok=True)
        if have:  # weights cached without their optimiser state
            states = [load_file(str(f)) for f in files]
            for ck, state in zip(cks, states):
                for name, value in state.items():
                    if not _same_weights(ck.state[name], value):
                        raise ShedkitError(
                            f"re-running the warm-up for its optimiser state did not reproduce the cached "
                            f"checkpoint weights in {self.dir}; delete that directory to start afresh")
            for f, ck in zip(adam_files, cks):
                save_adam_state(f, ck.adam)
            self.stats["warmup"] = "retrained for its optimizer state"
            return states, [ck.adam for ck in cks]
        self.stats["warmup"] = "trained"
        for f, ck in zip(files, cks):
            with atomic_path(f) as tmp:  # the published file gets umask modes, not safetensors' 0600
                save_file({k: v.contiguous() for k, v in ck.state.items()}, str(tmp))
        for f, ck in zip(adam_files, cks):
            save_adam_state(f, ck.adam)
        from shedkit.data.containers import atomic_write_json

        atomic_write_json(self.dir / "settings.json", self.settings)
        atomic_write_json(self.dir / "checkpoints.json", {
            "lr": [c.lr for c in cks], "steps": [c.steps for c in cks], "mean_loss": [c.mean_loss for c in cks],
            "warmup_rows": len(self.warmup), "seconds": self.stats["timings"]["warmup"],
        })
        return [ck.state for ck in cks], ([ck.adam for ck in cks] if need_adam else None)

    @staticmethod
    def _read_json(path: Path) -> dict | None:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None


def _read_row_parts(root: Path, valid) -> dict[str, dict]:
    """``{id: entry}`` from the JSONL parts under ``root`` whose entries pass ``valid``; a corrupt
    or invalid line is left out (recomputed, never trusted)."""
    found: dict[str, dict] = {}
    for part in sorted(root.glob("part-*.jsonl")) if root.exists() else []:
        for line in part.read_text().splitlines():
            try:
                e = json.loads(line)
                if valid(e):
                    found[e["id"]] = e
            except (ValueError, KeyError, TypeError):
                continue
    return found


class _RowCache:
    """Per row: {id, n_tokens, dot: [per checkpoint], norm2: [per checkpoint]} in JSONL parts;
    the dev gradient's squared norm per checkpoint; ``.npz`` parts of projected gradients
    ``[rows, checkpoints, dim]`` (per projection dimension and seed)."""

    def __init__(self, root: Path, checkpoints: int, dim: int, seed: int):
        self.root, self.checkpoints, self.dim, self.seed = root, int(checkpoints), int(dim), int(seed)
        self._entries: dict[str, dict] | None = None
        self._feats: dict[str, np.ndarray] | None = None

    def _valid(self, e: dict) -> bool:
        return e["n_tokens"] <= 0 or len(e["dot"]) == len(e["norm2"]) == self.checkpoints

    def entries(self) -> dict[str, dict]:
        if self._entries is None:
            self._entries = _read_row_parts(self.root, self._valid)
        return self._entries

    def _features_dir(self) -> Path:
        return self.root / f"sketch-{self.dim}-seed{self.seed}"

    def feature_rows(self) -> dict[str, np.ndarray]:
        if self._feats is None:
            found: dict[str, np.ndarray] = {}
            d = self._features_dir()
            for part in sorted(d.glob("part-*.npz")) if d.exists() else []:
                try:
                    with np.load(part, allow_pickle=False) as z:
                        found.update(zip(z["ids"].tolist(), z["features"]))
                except (OSError, ValueError, KeyError):
                    continue
            self._feats = found
        return self._feats

    def missing(self, ids: Sequence[str]) -> list[str]:
        have = self.entries()
        out = [i for i in ids if i not in have]
        if self.dim:
            feats = self.feature_rows()
            out += [i for i in ids if i in have and have[i]["n_tokens"] > 0 and i not in feats]
        return list(dict.fromkeys(out))

    def features(self, ids: Sequence[str]) -> np.ndarray:
        feats = self.feature_rows()
        out = np.full((len(ids), self.checkpoints, self.dim), np.nan, dtype=np.float32)
        for k, i in enumerate(ids):
            if i in feats:
                out[k] = feats[i]
        return out.transpose(1, 0, 2)

    def add(self, entries: list[dict], feature_ids: list[str], features: np.ndarray | None) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if features is not None and len(feature_ids):
            fd = self._features_dir()
            fd.mkdir(parents=True, exist_ok=True)
            with atomic_path(fd / f"part-{uuid.uuid4().hex}.npz") as tmp, open(tmp, "wb") as fh:
                np.savez(fh, ids=np.array(feature_ids, dtype=str), features=features.astype(np.float32))
            self.feature_rows().update(zip(feature_ids, features))
        text = "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries)
        atomic_write_text(self.root / f"part-{uuid.uuid4().hex}.jsonl", text)
        self.entries().update({e["id"]: e for e in entries})

    def dev_norm2(self) -> list[float] | None:
        try:
            values = json.loads((self.root / "dev.json").read_text())["dev_norm2"]
            return [float(v) for v in values] if len(values) == self.checkpoints else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def set_dev_norm2(self, values: list[float]) -> None:
        from shedkit.data.containers import atomic_write_json

        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.root / "dev.json", {"dev_norm2": values})


class _LessCache:
    """The ``less`` sub-cache: per row {id, n_tokens, task_dot: [per checkpoint][per task],
    norm2: [per checkpoint], center_dot: [per checkpoint]} (of u = Γ_t(g), in JSONL parts);
    per checkpoint the target directions (``targets-<t>.safetensors``, ``[tasks, out, in]`` per
    LoRA matrix) and the centre (``center-<t>.safetensors``); ``less.json``: |μ|^2 and <μ, T_k>
    per checkpoint, the task names and the centre's row count."""

    def __init__(self, root: Path, checkpoints: int, n_tasks: int):
        self.root, self.checkpoints, self.n_tasks = root, int(checkpoints), int(n_tasks)
        self._entries: dict[str, dict] | None = None

    def _valid(self, e: dict) -> bool:
        if e["n_tokens"] <= 0:
            return True
        return (len(e["task_dot"]) == len(e["norm2"]) == len(e["center_dot"]) == self.checkpoints
                and all(len(d) == self.n_tasks for d in e["task_dot"]))

    def entries(self) -> dict[str, dict]:
        if self._entries is None:
            self._entries = _read_row_parts(self.root, self._valid)
        return self._entries

    def missing(self, ids: Sequence[str]) -> list[str]:
        have = self.entries()
        return [i for i in dict.fromkeys(ids) if i not in have]

    def add(self, entries: list[dict]) -> None:
        if not entries:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries)
        atomic_write_text(self.root / f"part-{uuid.uuid4().hex}.jsonl", text)
        self.entries().update({e["id"]: e for e in entries})

    def load(self, kind: str) -> list[dict] | None:
        """``kind`` ("targets" or "center") per checkpoint, None unless every file is there."""
        from safetensors.torch import load_file

        files = [self.root / f"{kind}-{t}.safetensors" for t in range(self.checkpoints)]
        if not all(f.exists() for f in files):
            return None
        return [load_file(str(f)) for f in files]

    def save(self, kind: str, per_checkpoint: list[dict]) -> None:
        from safetensors.torch import save_file

        self.root.mkdir(parents=True, exist_ok=True)
        for t, tensors in enumerate(per_checkpoint):
            with atomic_path(self.root / f"{kind}-{t}.safetensors") as tmp:
                save_file({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}, str(tmp))

    def summary(self) -> dict | None:
        try:
            out = json.loads((self.root / "less.json").read_text())
            ok = (len(out["center_norm2"]) == len(out["center_task_dots"]) == self.checkpoints
                  and all(len(d) == self.n_tasks for d in out["center_task_dots"]))
            return out if ok else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def set_summary(self, values: dict) -> None:
        from shedkit.data.containers import atomic_write_json

        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.root / "less.json", values)


def _same_weights(a, b) -> bool:
    import torch

    return a.shape == b.shape and bool(torch.allclose(a.float().cpu(), b.float().cpu(), rtol=1e-4, atol=1e-6))


def _default_cache() -> Path:
    from shedkit.models.loading import cache_root

    return cache_root()
