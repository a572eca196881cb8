"""What SHED's value function calls: fine-tune the base on a subset, score it on the dev set.

``finetune_and_score`` is v(S); ``config_hash`` is the hash of everything that changes v(S)
except S itself, for cache keys; ``SubsetScore`` is a picklable ``ids -> v(ids)`` callable
for the value layer's ``CachedUtility`` and its process/Ray backends.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from shedkit.data.records import Record
from shedkit.errors import ShedkitError
from shedkit.models.config import MODEL_LAYER_VERSION, TrainConfig, stable_hash
from shedkit.models.objectives import DevSet, Objective, ObjectiveResult, evaluate


def _train_config(train_config: TrainConfig | Mapping[str, Any] | None) -> TrainConfig:
    if train_config is None:
        return TrainConfig()
    if isinstance(train_config, TrainConfig):
        return train_config
    return TrainConfig.from_dict(dict(train_config))


def finetune_and_score_details(
    model_spec: str,
    train_records: Sequence[Record],
    dev,
    train_config: TrainConfig | Mapping[str, Any] | None = None,
    objective: Objective | str = "auto",
    seed: int = 0,
    *,
    device=None,
    progress: bool = False,
) -> ObjectiveResult:
    """Like ``finetune_and_score`` but returns the full result (score + metrics + train stats)."""
    from shedkit.models.finetune import finetuned
    from shedkit.models.loading import shared_model

    config = _train_config(train_config)
    dev = DevSet.of(dev)
    obj = Objective.of(objective).resolve(dev)
    base, tokenizer = shared_model(model_spec, device=device)
    # v(S) is a set function: the rows' order (which seeds the shuffle) is canonical, by id
    train_records = sorted(train_records, key=lambda r: r.id)
    if not train_records:
        result = evaluate(base, tokenizer, dev, obj, progress=progress)
        result.metrics["train"] = None
        return result
    with finetuned(base, tokenizer, list(train_records), config, seed, progress=progress) as ft:
        result = evaluate(ft.model, tokenizer, dev, obj, progress=progress)
        result.metrics["train"] = ft.stats.to_dict()
    return result


def finetune_and_score(
    model_spec: str,
    train_records: Sequence[Record],
    dev,
    train_config: TrainConfig | Mapping[str, Any] | None = None,
    objective: Objective | str = "auto",
    seed: int = 0,
) -> float:
    """v(S): the dev score of ``model_spec`` fine-tuned (from its base weights, seeded) on
    ``train_records``; an empty ``train_records`` gives the base model's own score.

    dev       -- DevSet, a dev file path, records, or {query, choices, gold} items
    objective -- 'auto' | 'loss' | 'mc-accuracy' or an Objective (higher is better)
    The rows are put in id order first, so the result depends on the set, not on its order.
    The base model is loaded once per process and restored after each fine-tune.
    """
    return finetune_and_score_details(model_spec, train_records, dev, train_config, objective, seed).score


def config_hash(
    model_spec: str,
    train_config: TrainConfig | Mapping[str, Any] | None,
    objective: Objective | str,
    dev,
    seed: int,
    device=None,
) -> str:
    """Stable hash of everything (but the subset) that changes ``finetune_and_score``: the
    model's identity (alias source file / directory contents / hub id), every train-config
    field, the objective with its scoring settings, the dev set's content, the seed, the
    resolved precision and device type, and the model layer's version."""
    from shedkit.models.device import resolve_device, resolve_precision
    from shedkit.models.loading import model_identity

    config = _train_config(train_config)
    dev = DevSet.of(dev)
    obj = Objective.of(objective).resolve(dev)
    dev_type = resolve_device(device).type
    return stable_hash({
        "model": model_identity(model_spec),
        "train": config.to_dict(),
        "train_precision": resolve_precision(config.precision, dev_type),
        "objective": obj.to_dict(),
        "score_precision": resolve_precision(obj.score.precision, dev_type),
        "dev": dev.fingerprint(),
        "seed": int(seed),
        "device_type": dev_type,
        "version": MODEL_LAYER_VERSION,
    })


class SubsetScore:
    """Picklable ``score(ids) -> v(ids)`` over a fixed pool: holds only configuration (the
    model is loaded lazily, once per process). ``ids`` are record ids (any order)."""

    def __init__(self, model_spec: str, records: Sequence[Record], dev, train_config=None,
                 objective: Objective | str = "auto", seed: int = 0):
        self.model_spec = str(model_spec)
        self.by_id = {r.id: r for r in records}
        self.dev = DevSet.of(dev)
        self.train_config = _train_config(train_config)
        self.objective = Objective.of(objective).resolve(self.dev)
        self.seed = seed

    def settings_hash(self) -> str:
        return config_hash(self.model_spec, self.train_config, self.objective, self.dev, self.seed)

    def __call__(self, ids: Sequence[str]) -> float:
        missing = [i for i in ids if i not in self.by_id]
        if missing:
            raise ShedkitError(f"{len(missing)} id(s) are not in the pool, e.g. {missing[0]!r}")
        rows = [self.by_id[i] for i in ids]
        return finetune_and_score(self.model_spec, rows, self.dev, self.train_config, self.objective, self.seed)


__all__ = ["SubsetScore", "config_hash", "finetune_and_score", "finetune_and_score_details"]
