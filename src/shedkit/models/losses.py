"""Per-row response losses (LoBaSS, loss/IFD filters, dev-set loss), cached on disk per row.

``loss``  -- mean per-token loss (nats) over the tokens of every assistant turn of the row
             (content + end-of-turn marker, see ``encode``), conditioned on everything before.
``ifd``   -- instruction-following difficulty (Cherry LLM): the last response's mean loss
             with its prompt divided by its mean loss alone (rendered as a conversation with
             only that assistant turn). One extra pass over the (short) responses.

Cache: ``<cache_dir>/losses/<key>/part-*.jsonl``, one JSON line per row id; ``key`` hashes
the model identity and every scoring setting that changes a number (max_length, template,
resolved precision, device type, layer version). Each finished shard of rows is written as a
new part file (temp file + rename, a unique name per write), so an interrupted run keeps what
it finished, a rerun scores only the rows that are missing, and several processes may share
one cache.

Shards and backends (see ``shedkit.execute.shards``): the rows missing from the cache are
grouped by windows of ``shard_size`` consecutive positions (default ``CHUNK_ROWS``). With
``backend=None`` (the default) or the sequential backend the shards run here, one after the
other, with the caller's model. With ``backend="process"``/``"ray"`` (or a Backend object)
each shard travels as a :class:`LossShard` (model *spec* + settings + the shard's records); a
worker loads the model once per process (``shared_model``), checks that it is the model the
driver keyed the cache for (identity, device type, precision, and the weights' fingerprint when
the driver holds a live model), scores the shard and writes its part. Every path computes the
same shards in the same batches, so the numbers are identical (bitwise for fp32 on one
device type), and a shard finished by any worker is never recomputed. Only one shard's
per-token log-probabilities exist at a time; the driver keeps a few floats per row.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from shedkit.data.records import Record
from shedkit.errors import ShedkitError
from shedkit.execute.jobs import WorkerMismatchError
from shedkit.execute.shards import check_shard_size, opened_backend, plan_shards, run_shards, runs_inline, shard_delay
from shedkit.models.config import MODEL_LAYER_VERSION, ScoreConfig, stable_hash
from shedkit.models.device import model_device, resolve_precision
from shedkit.models.encode import encode_options, encode_record, encode_response_alone, has_empty_response
from shedkit.models.scoring import pad_id_of, token_logprobs
from shedkit.util.atomic import atomic_write_text

CHUNK_ROWS = 256  # default shard size: rows per cache part (an interruption loses at most this many rows' work)


@dataclass
class LossResult:
    """Losses of the scored rows, in input order; rows with an empty response are in
    ``skipped`` (only with ``on_empty="skip"``) and absent from every array."""

    positions: np.ndarray  # int positions into the input sequence of records
    ids: list[str]
    loss: np.ndarray  # mean response-token loss (all assistant turns)
    n_tokens: np.ndarray  # target tokens behind ``loss``
    loss_last: np.ndarray | None = None  # last response only, with its prompt (IFD numerator)
    loss_alone: np.ndarray | None = None  # last response alone (IFD denominator)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (position, record id)
    cached: int = 0  # rows read from the cache instead of computed
    shards: int = 0  # shards computed by this call (0: everything came from the cache)

    @property
    def ifd(self) -> np.ndarray:
        if self.loss_last is None or self.loss_alone is None:
            raise ShedkitError("IFD was not computed: call response_losses(..., ifd=True)")
        return self.loss_last / self.loss_alone

    def column(self, name: str, n_rows: int, fill: float = float("nan")) -> np.ndarray:
        """``name`` ('loss', 'ifd', ...) as a full-length column (``fill`` at skipped rows),
        for a scores table."""
        values = self.ifd if name == "ifd" else getattr(self, name)
        out = np.full(n_rows, fill, dtype=float)
        out[self.positions] = values
        return out


def model_fingerprint(model) -> str:
    """sha256 of every parameter and buffer (names, dtypes, shapes, bytes): identifies the
    weights of an in-memory model (~0.5 s for 135M parameters)."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:32]


class LossCache:
    """Per-row loss entries keyed by record id, under one settings key."""

    def __init__(self, root: str | os.PathLike, key: str, meta: dict):
        self.dir = Path(root) / "losses" / key
        self.meta = meta
        self._entries: dict[str, dict] | None = None

    def entries(self) -> dict[str, dict]:
        if self._entries is None:
            self._entries = {}
            for part in sorted(self.dir.glob("part-*.jsonl")) if self.dir.exists() else []:
                for line in part.read_text().splitlines():
                    try:
                        entry = json.loads(line)
                        self._entries[entry["id"]] = entry
                    except (ValueError, KeyError, TypeError):
                        continue  # a corrupt line is recomputed, never trusted
        return self._entries

    def add(self, entries: list[dict]) -> Path | None:
        """Write ``entries`` as one new part file (atomically, under a name no other writer
        uses); returns its path (None when there is nothing to write). The parts already on
        disk are not read."""
        if not entries:
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "meta.json"
        if not meta.exists():
            atomic_write_text(meta, json.dumps(self.meta, indent=1, sort_keys=True))
        text = "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries)
        path = atomic_write_text(self.dir / f"part-{uuid.uuid4().hex}.jsonl", text)
        if self._entries is not None:
            self._entries.update({e["id"]: e for e in entries})
        return path



def loss_cache_key(model_id: str, config: ScoreConfig, device_type: str) -> tuple[str, dict]:
    meta = {
        "model": model_id,
        "max_length": config.max_length,
        "template": config.template,
        **{k: (stable_hash(v) if k == "chat_template" else v) for k, v in config.to_dict().items() if k in ("train_on", "chat_template")},
        "precision": resolve_precision(config.precision, device_type),
        "device_type": device_type,
        "version": MODEL_LAYER_VERSION,
    }
    return stable_hash(meta), meta


def _mean_nll(lp: np.ndarray) -> float:
    return float(-lp.mean())


def response_losses(
    model,
    tokenizer,
    records: Sequence[Record],
    config: ScoreConfig | None = None,
    *,
    ifd: bool = False,
    on_empty: str = "error",
    cache_dir: str | os.PathLike | None = None,
    model_id: str | None = None,
    progress: bool = True,
    backend: Any = None,
    shard_size: int | None = None,
    model_spec: str | os.PathLike | None = None,
    device: str | None = None,
    trust_remote_code: bool = False,
) -> LossResult:
    """Mean response-token loss of each record under ``model`` (and IFD when ``ifd``).

    model     -- a loaded model (with its ``tokenizer``), or a model spec string (an alias,
                 local path or hub id, as ``load_model`` takes; ``tokenizer`` may then be None),
                 loaded here only if a shard runs in this process.
    on_empty  -- 'error' (default): a record whose responses are all empty raises a
                 ShedkitError naming it; 'skip': such records are left out and listed.
    cache_dir -- when given, per-row results are read from / written to the loss cache there;
                 ``model_id`` names the weights (default: ``model_fingerprint(model)`` for a
                 loaded model, ``model_identity(spec)`` for a spec).
    backend   -- None (default) or 'sequential': shards run here, one after the other;
                 'process', 'ray' or a ``Backend`` object (``execute.get_backend(name,
                 workers=...)``): shards run on its workers, each loading the model itself. A
                 backend given by name is created with its defaults and closed on return.
    shard_size -- rows per shard (default ``CHUNK_ROWS``): shards are windows of this many
                 consecutive rows, less those already cached; each finished shard is one cache
                 part. The numbers do not depend on the backend, but they may differ in the
                 last bits between shard sizes (rows are batched within a shard).
    model_spec -- with a loaded ``model`` and a process/Ray backend: the spec the workers load
                 (they check that its weights are ``model``'s); not needed for a spec ``model``.
    device    -- for a spec ``model``: where to load it (default: CUDA when present, else CPU);
                 workers load it there too. A loaded model's workers use its device.
    trust_remote_code -- passed to ``load_model`` wherever the spec is loaded.
    """
    config = config or ScoreConfig()
    size = check_shard_size(shard_size, CHUNK_ROWS)
    if on_empty not in ("error", "skip"):
        raise ShedkitError(f"on_empty must be 'error' or 'skip', not {on_empty!r}")
    positions, skipped = [], []
    for i, r in enumerate(records):
        if has_empty_response(r):
            if on_empty == "error":
                raise ShedkitError(
                    f"record {r.id} (row {r.index}) has an empty response: its loss is undefined; "
                    "drop it or score with on_empty='skip'"
                )
            skipped.append((i, r.id))
        else:
            positions.append(i)
    scored = [records[i] for i in positions]

    live = not isinstance(model, (str, os.PathLike))
    spec = str(model) if not live else (str(model_spec) if model_spec is not None else None)
    if live:
        device_type = model_device(model).type
    else:
        from shedkit.models.device import resolve_device

        device = str(resolve_device(device))
        device_type = resolve_device(device).type

    cache = None
    if cache_dir is not None:
        if model_id is None:
            if live:
                model_id = model_fingerprint(model)
            else:
                from shedkit.models.loading import model_identity

                model_id = model_identity(spec)
        key, meta = loss_cache_key(model_id, config, device_type)
        cache = LossCache(cache_dir, key, meta)
    known = cache.entries() if cache else {}
    need = ["loss", "n_tokens"] + (["loss_last", "loss_alone"] if ifd else [])
    seen: set[str] = set()
    missing = []  # position in `scored` of the first row of each id that the cache lacks
    for i, r in enumerate(scored):
        if r.id not in seen:
            seen.add(r.id)
            if not all(k in known.get(r.id, {}) for k in need):
                missing.append(i)
    shards = plan_shards(missing, size)

    fresh: dict[str, dict] = {}  # id -> the few numbers of a row computed now (no per-token arrays)
    if shards:
        with opened_backend(backend) as be:
            inline = runs_inline(be)
            recipe = None
            if not (inline and live):
                if spec is None:
                    raise ShedkitError(
                        f"the {be.name} backend loads the model in each worker: pass the model as a spec "
                        "string, or its spec as model_spec= (an alias, local path or hub id)"
                    )
                recipe = _model_recipe(spec, model if live else None, device, trust_remote_code, config, device_type)
            jobs = [
                LossShard(
                    index=k,
                    rows=tuple(_slim(scored[i]) for i in shard),
                    base=tuple(known.get(scored[i].id, {}) for i in shard),
                    config=config,
                    ifd=ifd,
                    model=recipe,
                    cache_dir=str(cache_dir) if cache is not None else None,
                    cache_key=cache.dir.name if cache is not None else None,
                    cache_meta=cache.meta if cache is not None else None,
                    label=f"rows {shard[0] + 1}-{shard[-1] + 1} of {len(scored)}",
                )
                for k, shard in enumerate(shards)
            ]
            if inline:
                lm, tok = (model, tokenizer) if live else recipe.load()
            local = lambda job: _run_shard(job, lm, tok, progress)  # noqa: E731 - used only inline
            from shedkit.util.progress import progress_bar

            total = sum(len(s) for s in shards)
            with progress_bar(total, f"response losses ({be.name if be else 'sequential'}, {len(shards)} shards)",
                              enabled=progress and not inline) as advance:
                for _, done in run_shards(be, jobs, run_loss_shard, local):
                    fresh.update({e["id"]: e for e in done.entries})
                    if cache is not None and (done.part is None or not (cache.dir / done.part).exists()):
                        cache.add(done.entries)  # the worker's disk is not ours (a remote Ray node)
                    advance(len(done.entries))

    def value(r: Record, k: str) -> float:
        entry = fresh.get(r.id) or known[r.id]
        return entry[k]

    res = LossResult(
        positions=np.asarray(positions, dtype=np.int64),
        ids=[r.id for r in scored],
        loss=np.array([value(r, "loss") for r in scored], dtype=float),
        n_tokens=np.array([value(r, "n_tokens") for r in scored], dtype=np.int64),
        skipped=skipped,
        cached=sum(1 for r in scored if r.id not in fresh),
        shards=len(shards),
    )
    if ifd:
        res.loss_last = np.array([value(r, "loss_last") for r in scored], dtype=float)
        res.loss_alone = np.array([value(r, "loss_alone") for r in scored], dtype=float)
    return res


# -- shards ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelRecipe:
    """How a worker gets the scoring model, and what the model it gets must match: the
    cache key's model identity, device type and precision, and (when the driver held a live
    model) the fingerprint of its weights."""

    spec: str
    dtype: str
    device: str
    trust_remote_code: bool
    identity: str  # model_identity(spec) where the driver resolved it
    device_type: str
    precision: str  # the ScoreConfig setting ('auto', 'bf16', 'fp32')
    resolved_precision: str  # what it resolved to in the driver
    fingerprint: str | None = None  # model_fingerprint of the driver's live model

    def load(self):
        """``(model, tokenizer)``, loaded once per process and checked once per load."""
        from shedkit.models.device import device_available
        from shedkit.models.loading import shared_model

        if not device_available(self.device):
            raise WorkerMismatchError(
                f"a loss-scoring worker refuses its shard: the driver keyed it for {self.device}, which this "
                "worker does not have" + (" (with --backend ray give each job a GPU, --gpus-per-job 1)"
                                          if self.device_type == "cuda" else "")
            )
        model, tokenizer = shared_model(self.spec, dtype=self.dtype, device=self.device,
                                        trust_remote_code=self.trust_remote_code)
        if _VERIFIED.get(self) != id(model):
            self.check(model)
            _VERIFIED[self] = id(model)
        return model, tokenizer

    def check(self, model) -> None:
        """Raise ``WorkerMismatchError`` unless ``model`` is the one the cache key names."""
        from shedkit.models.loading import model_identity

        dev = model_device(model)
        problems = []
        identity = model_identity(self.spec)
        if identity != self.identity:
            problems.append(f"'{self.spec}' is {identity} here but {self.identity} in the driver")
        if dev.type != self.device_type:
            hint = (" (this worker sees no GPU: with --backend ray give each job one, --gpus-per-job 1)"
                    if self.device_type == "cuda" else "")
            problems.append(f"it runs on {dev.type} here, on {self.device_type} in the driver{hint}")
        elif resolve_precision(self.precision, dev) != self.resolved_precision:
            problems.append(f"precision {self.precision} resolves to {resolve_precision(self.precision, dev)} here, "
                            f"{self.resolved_precision} in the driver")
        if not problems and self.fingerprint is not None and model_fingerprint(model) != self.fingerprint:
            problems.append(f"'{self.spec}' loads other weights than the driver's model (pass the spec of the "
                            "model you score as model_spec)")
        if problems:
            raise WorkerMismatchError("a loss-scoring worker refuses its shard: " + "; ".join(problems))


_VERIFIED: dict[ModelRecipe, int] = {}  # recipe -> id() of the shared model it was checked on


def _model_recipe(spec: str, live_model, device: str | None, trust_remote_code: bool, config: ScoreConfig,
                  device_type: str) -> ModelRecipe:
    from shedkit.models.loading import model_identity

    dtype = "float32"  # load_model's default, for a spec
    if live_model is not None:  # workers load the spec as the driver's model is: same dtype and device
        param = next(live_model.parameters(), None)
        dtype = str(param.dtype).removeprefix("torch.") if param is not None else dtype
        device = str(model_device(live_model))
    return ModelRecipe(
        spec=spec, dtype=dtype, device=str(device),
        trust_remote_code=trust_remote_code, identity=model_identity(spec), device_type=device_type,
        precision=config.precision, resolved_precision=resolve_precision(config.precision, device_type),
        fingerprint=model_fingerprint(live_model) if live_model is not None else None,
    )


def _slim(record: Record) -> Record:
    """The record without its original row (scoring reads the turns only): less to pickle."""
    return Record(record.id, record.index, record.turns, {})


@dataclass(frozen=True)
class LossShard:
    """One shard's job: picklable, holds no model (see the module doc)."""

    index: int
    rows: tuple[Record, ...]
    base: tuple[dict, ...]  # what the cache already holds for each row (kept in the new entry)
    config: ScoreConfig
    ifd: bool
    model: ModelRecipe | None  # None only for shards run inline with the caller's model
    cache_dir: str | None
    cache_key: str | None
    cache_meta: dict | None
    label: str = ""


@dataclass(frozen=True)
class ShardDone:
    index: int
    entries: list[dict]  # per row: id, loss, n_tokens (+ loss_last, loss_alone)
    part: str | None  # name of the cache part the shard was written to
    seconds: float


def run_loss_shard(job: LossShard) -> ShardDone:
    """A worker's entry point: load the model (once per process), score the shard, write its
    cache part, return the per-row numbers."""
    model, tokenizer = job.model.load()
    return _run_shard(job, model, tokenizer, progress=False)


def _run_shard(job: LossShard, model, tokenizer, progress: bool) -> ShardDone:
    start = time.perf_counter()
    entries = _score_rows(model, tokenizer, list(job.rows), job.config, job.ifd, progress, job.label)
    entries = [{**base, **e} for base, e in zip(job.base, entries)]
    shard_delay()
    part = None
    if job.cache_dir is not None:
        part = LossCache(job.cache_dir, job.cache_key, job.cache_meta).add(entries).name
    return ShardDone(job.index, entries, part, time.perf_counter() - start)


def _score_rows(model, tokenizer, records, config: ScoreConfig, ifd: bool, progress: bool, label: str = "") -> list[dict]:
    enc = [encode_record(tokenizer, r, config.max_length, **encode_options(config)) for r in records]
    kw = dict(pad_id=pad_id_of(tokenizer), batch_size=config.batch_size, max_batch_tokens=config.max_batch_tokens,
              precision=config.precision, progress=progress)
    lps = token_logprobs(model, enc, desc=f"response losses, {label}".rstrip(", "), **kw)
    entries = []
    for r, e, lp in zip(records, enc, lps):
        if not len(lp):
            raise ShedkitError(f"record {r.id} (row {r.index}) has no response token left after truncation to {config.max_length}")
        entries.append({"id": r.id, "loss": _mean_nll(lp), "n_tokens": int(len(lp))})
    if ifd:
        last_turn = [int(e.groups.max()) for e in enc]
        alone = [encode_response_alone(tokenizer, r, config.max_length, **encode_options(config)) for r in records]
        alone_lps = token_logprobs(model, alone, desc="IFD: responses alone", **kw)
        for entry, e, lp, k, lp_alone in zip(entries, enc, lps, last_turn, alone_lps):
            groups = e.groups[np.flatnonzero(e.groups[1:]) + 1]
            entry["loss_last"] = _mean_nll(lp[groups == k])
            entry["loss_alone"] = _mean_nll(lp_alone)
    return entries
