"""First-order row values: each row's influence on the target dev loss, from LoRA gradients.

    value(z) = Σ_t η_t <∇ℓ_dev(θ_t), ∇ℓ(z; θ_t)>                       (normalize="raw")
    value(z) = Σ_t η_t cos(∇ℓ_dev(θ_t), ∇ℓ(z; θ_t))                     (normalize="cosine")

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

Rows with an empty response, or none of whose response survives ``max_length``, get NaN.
The estimator contract: ``__init__`` stores parameters, ``fit(records, dev)`` returns self
with ``result_`` (a ``ValuationResult.from_values``), ``raw_``, ``cosine_``, ``n_tokens_``
(per row, input order) and ``stats_`` (gradients computed / read from the cache, seconds).
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

NORMALIZE = ("raw", "cosine")
FIRST_ORDER_VERSION = "1"


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
        self.projection_dim = projection_dim
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.chunk_rows = chunk_rows
        self.cache_dir = cache_dir
        self.seed = seed
        self.device = device
        self.progress = progress

    # -- public --------------------------------------------------------------------------
    def fit(self, records: Sequence, dev) -> "FirstOrderValuation":
        from shedkit.models.config import TrainConfig
        from shedkit.models.objectives import DevSet
        from shedkit.value.result import ValuationResult

        if self.normalize not in NORMALIZE:
            raise ShedkitError(f"normalize must be one of {NORMALIZE}, not {self.normalize!r}")
        if int(self.checkpoints) < 1:
            raise ShedkitError("first-order valuation needs at least 1 checkpoint")
        config = self.train_config or TrainConfig(epochs=2.0)
        if config.method != "lora":
            raise ShedkitError("first-order values are taken over LoRA adapters: use train method 'lora'")
        dev = DevSet.of(dev)
        if not dev.records:
            raise ShedkitError("first-order values need a dev set of instruction/response rows (a loss target)")
        start = time.perf_counter()
        work = _Work(self, records, dev, config)
        per_ckpt = work.run()
        n = len(records)
        raw, cos = np.zeros(n), np.zeros(n)
        for lr, dev_norm2, dots, norms2 in per_ckpt:
            raw += lr * dots
            with np.errstate(invalid="ignore", divide="ignore"):
                cos += lr * dots / np.sqrt(norms2 * dev_norm2)
        self.raw_, self.cosine_, self.n_tokens_ = raw, cos, work.n_tokens
        self.features_ = work.features
        self.stats_ = {**work.stats, "seconds": time.perf_counter() - start}
        values = raw if self.normalize == "raw" else cos
        self.result_ = ValuationResult.from_values(
            [r.id for r in records], values, counts=np.full(n, len(per_ckpt), dtype=np.int64),
            estimator="first-order", params=self.params(), seed=int(self.seed), stopped_by="all rows",
            n_evaluations=0, elapsed=self.stats_["seconds"], cache_key=work.key,
        )
        return self

    def params(self) -> dict[str, Any]:
        return {
            "model": self.model, "warmup_rows": self.warmup_rows, "checkpoints": int(self.checkpoints),
            "last_layers": self.last_layers, "normalize": self.normalize, "projection_dim": int(self.projection_dim),
            "train": (self.train_config.to_dict() if self.train_config is not None else None),
        }


class _Work:
    """One fit: settings resolved, cache opened, model loaded only when something is missing."""

    def __init__(self, owner: FirstOrderValuation, records: Sequence, dev, config):
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
        ids = [self.records[i].id for i in self.usable]
        if cached.dev_norm2() is None or cached.missing(ids):
            self._compute(cached)
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
        return [(float(meta["lr"][t]), float(dev_norm2[t]), dots[t], norms2[t]) for t in range(n_ck)]

    def _compute(self, cache: "_RowCache") -> None:
        import copy

        from shedkit.models.encode import encode_record
        from shedkit.models.gradients import (
            CountSketch, attach_lora, checkpoint_dev_gradients, checkpoint_gradient_stats, lora_matrices,
            warmup_checkpoints,
        )
        from shedkit.models.scoring import pad_id_of

        base, tok = self.model()
        model = attach_lora(copy.deepcopy(base), self.config, self.o.last_layers, seed=self.o.seed)
        states = self._checkpoints(model, tok, self._read_json(self.dir / "checkpoints.json"), warmup_checkpoints)
        cfg = self.config
        pad = pad_id_of(tok)
        timings = self.stats["timings"]
        t0 = time.perf_counter()
        dev_seqs = [encode_record(tok, r, cfg.max_length, cfg.template) for r in self.dev.records]
        devs = checkpoint_dev_gradients(model, dev_seqs, states, pad, cfg.precision, self.o.batch_size,
                                        self.o.max_batch_tokens)
        timings["dev_gradients"] = time.perf_counter() - t0
        dev_norm2 = [float(sum(float((g.double() ** 2).sum()) for g in d.values())) for d in devs]
        sketch = None
        if self.o.projection_dim:
            sketch = CountSketch([(n, tuple(m.weight.shape)) for n, m in lora_matrices(model)],
                                 int(self.o.projection_dim), seed=self.o.seed)
        todo = set(cache.missing([self.records[i].id for i in self.usable]))
        todo_pos = [i for i in self.usable if self.records[i].id in todo]
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
                )
            entries = [{"id": self.records[i].id, "n_tokens": 0, "dot": None, "norm2": None} for i in chunk]
            for j, k in enumerate(ok):
                entries[k].update(n_tokens=int(stats.n_tokens[j]), dot=stats.dots[:, j].tolist(),
                                  norm2=stats.norms2[:, j].tolist())
            feats = stats.features.transpose(1, 0, 2) if (stats is not None and sketch) else None
            cache.add(entries, [entries[k]["id"] for k in ok], feats)
            self.stats["row_gradients_computed"] += len(ok) * len(states)
        timings["row_gradients"] = time.perf_counter() - t0
        cache.set_dev_norm2(dev_norm2)
        del model

    def _checkpoints(self, model, tok, meta, warmup_checkpoints) -> list[dict]:
        """The warm-up's adapter weights per checkpoint: from the cache, else trained and saved."""
        from safetensors.torch import load_file, save_file

        files = [self.dir / f"checkpoint-{t}.safetensors" for t in range(self.o.checkpoints)]
        if meta is not None and all(f.exists() for f in files):
            return [load_file(str(f)) for f in files]
        t0 = time.perf_counter()
        cks = warmup_checkpoints(model, tok, [self.records[i] for i in self.warmup], self.config,
                                 int(self.o.checkpoints), seed=self.o.seed, progress=self.o.progress)
        self.stats["warmup"] = "trained"
        self.stats["timings"]["warmup"] = time.perf_counter() - t0
        self.dir.mkdir(parents=True, exist_ok=True)
        for f, ck in zip(files, cks):
            with atomic_path(f) as tmp:  # the published file gets umask modes, not safetensors' 0600
                save_file({k: v.contiguous() for k, v in ck.state.items()}, str(tmp))
        from shedkit.data.containers import atomic_write_json

        atomic_write_json(self.dir / "settings.json", self.settings)
        atomic_write_json(self.dir / "checkpoints.json", {
            "lr": [c.lr for c in cks], "steps": [c.steps for c in cks], "mean_loss": [c.mean_loss for c in cks],
            "warmup_rows": len(self.warmup), "seconds": self.stats["timings"]["warmup"],
        })
        return [ck.state for ck in cks]

    @staticmethod
    def _read_json(path: Path) -> dict | None:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None


class _RowCache:
    """Per row: {id, n_tokens, dot: [per checkpoint], norm2: [per checkpoint]} in JSONL parts;
    the dev gradient's squared norm per checkpoint; ``.npz`` parts of projected gradients
    ``[rows, checkpoints, dim]`` (per projection dimension and seed)."""

    def __init__(self, root: Path, checkpoints: int, dim: int, seed: int):
        self.root, self.checkpoints, self.dim, self.seed = root, int(checkpoints), int(dim), int(seed)
        self._entries: dict[str, dict] | None = None
        self._feats: dict[str, np.ndarray] | None = None

    def entries(self) -> dict[str, dict]:
        if self._entries is None:
            found: dict[str, dict] = {}
            for part in sorted(self.root.glob("part-*.jsonl")) if self.root.exists() else []:
                for line in part.read_text().splitlines():
                    try:
                        e = json.loads(line)
                        if e["n_tokens"] > 0 and not (len(e["dot"]) == len(e["norm2"]) == self.checkpoints):
                            continue
                        found[e["id"]] = e
                    except (ValueError, KeyError, TypeError):
                        continue  # a corrupt line is recomputed, never trusted
            self._entries = found
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


def _default_cache() -> Path:
    from shedkit.models.loading import cache_root

    return cache_root()
