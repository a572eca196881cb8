"""Per-row scores the row-score methods share (lobass, first-order's guards, lowest-loss, ifd,
filtered-random, shed-hybrid's row scores): the scoring settings, the response losses of a
model over the pool, IFD's response-alone losses, and the quota groups of the rows.

Losses go through the model layer's ``response_losses`` (cached per row under
``<cache_dir>/losses``). The pool's base losses (``model_losses`` given the model's ``spec``)
run on the backend the run's ``BackendOptions`` name (``backend``, ``workers``,
``ray_address``; none named: in this process, as always), in shards of ``shard_size`` rows
(``ScoreOptions``; default ``CHUNK_ROWS``, 256). Every backend gives the same numbers and the
same cache entries. The response-alone losses keep their own loop, in this process: they are
batched over the whole pool at once, and sharding them would change their batches.
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np

from shedkit.data.records import Record
from shedkit.errors import ShedkitError
from shedkit.pipeline.methods.base import MethodContext
from shedkit.selectors.learnability import parse_quota
from shedkit.util.defaults import DEFAULT_MODEL

SCORE_OPTIONS = {"max_length": "max_length", "precision": "precision", "template": "template",
                 "train_on": "train_on", "chat_template": "chat_template",
                 "score_batch_size": "batch_size", "max_batch_tokens": "max_batch_tokens"}


def score_config_from(ctx: MethodContext):
    from shedkit.models.config import ScoreConfig

    values = {field_: ctx.option(opt) for opt, field_ in SCORE_OPTIONS.items() if ctx.option(opt) is not None}
    return ScoreConfig(**values)


def group_labels(records: Sequence[Record], quota_by: str | None, quota) -> list[str] | None:
    """Each record's value of the pool column ``quota_by`` as a string (None without it)."""
    if quota_by is None:
        if quota:
            raise ShedkitError("--quota needs --quota-by COLUMN (the column of the pool rows the groups are read from)")
        return None
    parse_quota(quota)  # fail on a bad quota before any model work
    labels = []
    for r in records:
        value = r.row.get(quota_by) if hasattr(r.row, "get") else None
        if value is None:
            columns = sorted(r.row)[:20] if hasattr(r.row, "keys") else []
            raise ShedkitError(f"--quota-by {quota_by!r}: row {r.index} has no value in that column (columns: {columns})")
        labels.append(value if isinstance(value, str) else json.dumps(value, sort_keys=True))
    return labels


def model_losses(model, tokenizer, ctx: MethodContext, config, model_id: str, ifd: bool, spec: str | None = None):
    """``response_losses`` of the pool under ``model`` (rows with an empty response skipped),
    in shards of the ``shard_size`` option. Given ``spec`` (what ``model`` was loaded from),
    the shards run on the backend the run names, if any; without it (a reference model that
    only exists here) they run in this process."""
    from contextlib import nullcontext

    from shedkit.models.device import model_device
    from shedkit.models.losses import response_losses
    from shedkit.pipeline.backends import chosen_backend

    opened = nullcontext() if spec is None else chosen_backend(ctx, {"device": str(model_device(model))})
    with opened as backend:
        return response_losses(model, tokenizer, ctx.records, config, ifd=ifd, on_empty="skip",
                               cache_dir=ctx.cache_dir, model_id=model_id, progress=bool(ctx.option("progress", True)),
                               backend=backend, shard_size=ctx.option("shard_size"), model_spec=spec)


def base_loss_column(ctx: MethodContext, ifd: bool = False):
    """The base model's per-row response loss (NaN for rows without one), and a summary."""
    from shedkit.models.loading import model_identity, shared_model

    spec = str(ctx.option("model", DEFAULT_MODEL))
    model, tok = shared_model(spec, device=ctx.option("device"))
    res = model_losses(model, tok, ctx, score_config_from(ctx), model_identity(spec), ifd=ifd, spec=spec)
    return res.column("loss", len(ctx.records)), {"computed": len(res.ids) - res.cached, "cached": res.cached}


def ifd_ratio(loss, alone) -> np.ndarray:
    """IFD = loss(response | instruction) / loss(response alone); NaN where the latter is not > 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(alone > 0, loss / alone, np.nan)


def encode_response_plain(tokenizer, record, max_length: int, template: str = "auto"):
    """The last response's target text (content + end-of-turn marker, as the row's own
    rendering marks it) after one start token, no template around it."""
    from shedkit.data.records import Turn
    from shedkit.models.encode import Encoded, render

    text, spans = render(tokenizer, (Turn("assistant", record.response),), template)
    start, end = spans[-1]
    ids = tokenizer(text[start:end], add_special_tokens=False)["input_ids"][: max_length - 1]
    first = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    ids = np.asarray([int(first if first is not None else 0), *ids], dtype=np.int64)
    groups = np.ones(len(ids), dtype=np.int16)
    groups[0] = 0
    return Encoded(ids, groups)


def response_alone_cache_key(model_id: str, config, device_type: str) -> tuple[str, dict]:
    """The loss cache key (and its meta) of the responses-alone pass: the base losses' key
    marked with its kind, so the two passes never share entries."""
    from shedkit.models.config import stable_hash
    from shedkit.models.losses import loss_cache_key

    _, meta = loss_cache_key(model_id, config, device_type)
    meta = {**meta, "kind": "response-alone-plain"}
    return stable_hash(meta), meta


def response_alone_losses(ctx: MethodContext):
    """Mean loss of each row's last response alone (see ``encode_response_plain``), cached
    per row under ``<cache_dir>/losses/<key>`` like every other loss. The rows run in shards
    of the ``shard_size`` option (windows of the pool, as ``response_losses`` makes them),
    each written to the cache as it finishes, so a killed run loses at most one shard's work.
    The shards run in this process, not on ``--backend``. Rows are batched within a shard, so
    the numbers may differ in the last bits between shard sizes (as ``response_losses``')."""
    from shedkit.execute.shards import check_shard_size, plan_shards
    from shedkit.models.config import ScoreConfig
    from shedkit.models.device import model_device
    from shedkit.models.encode import has_empty_response
    from shedkit.models.loading import model_identity, shared_model
    from shedkit.models.losses import CHUNK_ROWS, LossCache
    from shedkit.models.scoring import pad_id_of, token_logprobs
    from shedkit.util.progress import progress_bar

    spec = str(ctx.option("model", DEFAULT_MODEL))
    model, tok = shared_model(spec, device=ctx.option("device"))
    config: ScoreConfig = score_config_from(ctx)
    key, meta = response_alone_cache_key(model_identity(spec), config, model_device(model).type)
    cache = LossCache(ctx.cache_dir, key, meta)
    known = cache.entries()
    n = len(ctx.records)
    todo = [i for i, r in enumerate(ctx.records) if not has_empty_response(r) and r.id not in known]
    shards = plan_shards(todo, check_shard_size(ctx.option("shard_size"), CHUNK_ROWS))
    with progress_bar(len(todo), "IFD: responses alone", enabled=bool(ctx.option("progress", True))) as advance:
        for shard in shards:
            seqs = [encode_response_plain(tok, ctx.records[i], config.max_length, config.template) for i in shard]
            lps = token_logprobs(model, seqs, pad_id_of(tok), batch_size=config.batch_size,
                                 max_batch_tokens=config.max_batch_tokens, precision=config.precision)
            cache.add([{"id": ctx.records[i].id, "loss_alone": float(-lp.mean()) if len(lp) else None}
                       for i, lp in zip(shard, lps)])
            advance(len(shard))
    if shards:
        known = cache.entries()
    out = np.full(n, np.nan)
    for i, r in enumerate(ctx.records):
        v = known.get(r.id, {}).get("loss_alone")
        if v is not None:
            out[i] = v
    return out, {"computed": len(todo), "cached": n - len(todo), "key": key}
