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
from shedkit.value.utility import ScoreFunction


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
    """Stable hash of exactly what (but the subset) changes ``finetune_and_score``: the
    model's identity (alias source file / directory contents / hub id and the commit it
    resolves to), every train-config field, the objective with the scoring settings that
    change a number (not its batch sizes), the dev set's content, the seed, the resolved
    precisions and device type, the torch / transformers / peft versions, and the model
    layer's version."""
    from shedkit.models.device import resolve_device, resolve_precision

    config = _train_config(train_config)
    dev = DevSet.of(dev)
    obj = Objective.of(objective).resolve(dev)
    dev_type = resolve_device(device).type
    return _settings_hash(model_spec, config, obj, dev, seed, dev_type,
                          resolve_precision(config.precision, dev_type), resolve_precision(obj.score.precision, dev_type))


def _settings_hash(model_spec, config: TrainConfig, obj: Objective, dev: DevSet, seed: int, dev_type: str,
                   train_precision: str, score_precision: str) -> str:
    from shedkit.models.config import hub_revision, library_versions
    from shedkit.models.loading import model_identity

    identity = model_identity(model_spec)
    train = {k: v for k, v in config.to_dict().items() if k != "precision"}
    objective = {**obj.to_dict(), "score": {k: v for k, v in obj.score.key_dict().items() if k != "precision"}}
    return stable_hash({
        "model": identity,
        "revision": hub_revision(identity[len("hub:"):]) if identity.startswith("hub:") else None,
        "train": train,
        "train_precision": train_precision,
        "objective": objective,
        "score_precision": score_precision,
        "dev": dev.fingerprint(),
        "seed": int(seed),
        "device_type": dev_type,
        "libraries": library_versions(),
        "version": MODEL_LAYER_VERSION,
    })


def _pinned_precision(precision: str, device: str) -> str:
    from shedkit.models.device import device_available, resolve_precision

    if precision == "auto" and not device_available(device):
        raise ShedkitError(
            f"device {device!r} is not on this machine, so 'auto' precision cannot be resolved here; "
            "pass --precision bf16 or --precision fp32 (the jobs' cache keys are made here)"
        )
    return resolve_precision(precision, device)


class SubsetScore(ScoreFunction):
    """Picklable ``score(ids) -> v(ids)`` over a fixed pool: holds only configuration (the
    model is loaded lazily, once per process). ``ids`` are record ids (any order).

    The device and the precisions are resolved once, where the object is made (the driver),
    and pinned: ``runtime`` says what every job must run on, ``settings_hash`` (a property,
    computed in whichever process asks) keys the cache by what *this* process would actually
    run (``actual_runtime()``), so a worker without the driver's GPU, or with other library
    versions, refuses a job (``ScoreJobRunner``) rather than caching a wrong value under its key.
    """

    def __init__(self, model_spec: str, records: Sequence[Record], dev, train_config=None,
                 objective: Objective | str = "auto", seed: int = 0, *, device=None):
        from dataclasses import replace

        from shedkit.models.device import pin_device, resolve_precision

        self.device = pin_device(device)
        dev_set = DevSet.of(dev)
        train = _train_config(train_config)
        obj = Objective.of(objective).resolve(dev_set)
        self.train_config = replace(train, precision=_pinned_precision(train.precision, self.device))
        self.objective = replace(obj, score=replace(obj.score, precision=_pinned_precision(obj.score.precision, self.device)))
        self.model_spec = str(model_spec)
        self.by_id = {r.id: r for r in records}
        self.dev = dev_set
        self.seed = int(seed)
        self.state: dict = {}
        self.config = {"model": self.model_spec, "device": self.device, "seed": self.seed,
                       "train": self.train_config.to_dict(), "objective": self.objective.to_dict()}

    # -- what the job runs on -------------------------------------------------------------
    @property
    def runtime(self) -> dict[str, str]:
        """The pinned ``{device, precision}`` (precision: the fine-tune's; scoring's is keyed too)."""
        return {"device": self.device, "precision": self.train_config.precision}

    def actual_runtime(self) -> dict[str, str]:
        """``{device, precision}`` this process would really run a job on."""
        import torch

        from shedkit.models.device import device_name

        try:
            device = device_name(self.device)
        except ShedkitError:  # the pinned device is not here (a worker given no GPU)
            device = device_name(None)
        precision = self.train_config.precision
        if precision == "bf16" and device.startswith("cuda") and not torch.cuda.is_bf16_supported():
            precision = "fp32"
        return {"device": device, "precision": precision}

    @property
    def settings_hash(self) -> str:
        """The cache key's settings, for the pinned device and precisions, computed in this
        process (its library versions, its copy of the model files)."""
        if "settings_hash" not in self.state:
            import torch

            self.state["settings_hash"] = _settings_hash(
                self.model_spec, self.train_config, self.objective, self.dev, self.seed,
                torch.device(self.device).type, self.train_config.precision, self.objective.score.precision,
            )
        return self.state["settings_hash"]

    # -- pickling: configuration and the pool, never a loaded model --------------------------
    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "state"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.state = {}

    def score(self, ids: tuple[str, ...]) -> float:
        missing = [i for i in ids if i not in self.by_id]
        if missing:
            raise ShedkitError(f"{len(missing)} id(s) are not in the pool, e.g. {missing[0]!r}")
        rows = [self.by_id[i] for i in ids]
        result = finetune_and_score_details(self.model_spec, rows, self.dev, self.train_config, self.objective,
                                            self.seed, device=self.device)
        ran = (result.metrics.get("train") or {}).get("precision")
        if ran is not None and ran != self.train_config.precision:  # belt and braces: never mis-key a value
            raise ShedkitError(f"the fine-tune ran in {ran}, but its cache key says {self.train_config.precision}")
        return result.score

    def __repr__(self) -> str:
        return f"SubsetScore(model={self.model_spec!r}, players={len(self.by_id)}, device={self.device!r})"


__all__ = ["SubsetScore", "config_hash", "finetune_and_score", "finetune_and_score_details"]
