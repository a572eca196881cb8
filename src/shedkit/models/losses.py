"""Per-row response losses (LoBaSS, loss/IFD filters, dev-set loss), cached on disk per row.

``loss``  -- mean per-token loss (nats) over the tokens of every assistant turn of the row
             (content + end-of-turn marker, see ``encode``), conditioned on everything before.
``ifd``   -- instruction-following difficulty (Cherry LLM): the last response's mean loss
             with its prompt divided by its mean loss alone (rendered as a conversation with
             only that assistant turn). One extra pass over the (short) responses.

Cache: ``<cache_dir>/losses/<key>/part-*.jsonl``, one JSON line per row id; ``key`` hashes
the model identity and every scoring setting that changes a number (max_length, template,
resolved precision, device type, layer version). Each finished chunk of rows is written as a
new part file (temp file + rename), so an interrupted run keeps what it finished, a rerun
scores only the rows that are missing, and several processes may share one cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from shedkit.data.records import Record
from shedkit.errors import ShedkitError
from shedkit.models.config import MODEL_LAYER_VERSION, ScoreConfig, stable_hash
from shedkit.models.device import model_device, resolve_precision
from shedkit.models.encode import encode_options, encode_record, encode_response_alone, has_empty_response
from shedkit.models.scoring import pad_id_of, token_logprobs
from shedkit.util.atomic import atomic_write_text

CHUNK_ROWS = 256  # rows per cache part (an interruption loses at most this many rows' work)


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

    def add(self, entries: list[dict]) -> None:
        if not entries:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "meta.json"
        if not meta.exists():
            atomic_write_text(meta, json.dumps(self.meta, indent=1, sort_keys=True))
        text = "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries)
        atomic_write_text(self.dir / f"part-{uuid.uuid4().hex}.jsonl", text)
        self.entries().update({e["id"]: e for e in entries})



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
) -> LossResult:
    """Mean response-token loss of each record under ``model`` (and IFD when ``ifd``).

    on_empty  -- 'error' (default): a record whose responses are all empty raises a
                 ShedkitError naming it; 'skip': such records are left out and listed.
    cache_dir -- when given, per-row results are read from / written to the loss cache there;
                 ``model_id`` names the weights (default: ``model_fingerprint(model)``).
    """
    config = config or ScoreConfig()
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

    cache = None
    if cache_dir is not None:
        key, meta = loss_cache_key(model_id or model_fingerprint(model), config, model_device(model).type)
        cache = LossCache(cache_dir, key, meta)
    known = cache.entries() if cache else {}
    need = ["loss", "n_tokens"] + (["loss_last", "loss_alone"] if ifd else [])
    todo = sorted({r.id: i for i, r in enumerate(scored) if not all(k in known.get(r.id, {}) for k in need)}.values())

    fresh: dict[str, dict] = {}
    for start in range(0, len(todo), CHUNK_ROWS):
        chunk = [scored[i] for i in todo[start : start + CHUNK_ROWS]]
        entries = _score_rows(model, tokenizer, chunk, config, ifd, progress, start, len(todo))
        fresh.update({e["id"]: e for e in entries})
        if cache:
            cache.add([{**known.get(e["id"], {}), **e} for e in entries])

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
    )
    if ifd:
        res.loss_last = np.array([value(r, "loss_last") for r in scored], dtype=float)
        res.loss_alone = np.array([value(r, "loss_alone") for r in scored], dtype=float)
    return res


def _score_rows(model, tokenizer, records, config: ScoreConfig, ifd: bool, progress: bool, done: int, total: int) -> list[dict]:
    enc = [encode_record(tokenizer, r, config.max_length, **encode_options(config)) for r in records]
    kw = dict(pad_id=pad_id_of(tokenizer), batch_size=config.batch_size, max_batch_tokens=config.max_batch_tokens,
              precision=config.precision, progress=progress)
    lps = token_logprobs(model, enc, desc=f"response losses, rows {done + 1}-{done + len(records)} of {total}", **kw)
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
