"""Sharded per-row work (loss scoring, embedding) over the execution backends, resumable.

``response_losses`` (models/losses.py) and ``embed_texts`` (embed/api.py) both work like this:

1. **Plan.** The rows still missing from the on-disk cache are grouped into shards by
   *windows of consecutive input positions*: shard ``k`` holds the missing rows among
   positions ``[k * shard_size, (k + 1) * shard_size)`` (windows with no missing row are
   dropped). A row's shard depends only on its position, never on which other shards are
   done, so a run stopped part-way (even by ``kill -9``) and started again rebuilds exactly
   the shards it had not finished: each is computed on the same rows, in the same batches,
   and gives the same numbers bit for bit as an uninterrupted run.
2. **Run.** Each shard is a small picklable job description (the model or embedder *spec*,
   the settings and the shard's records or texts; never a live model object). A worker loads
   the model itself, once per worker process (see ``shared_model`` / the embedder memo),
   computes the shard, and writes its results to the shared cache as one new part file
   (temp file + rename; part names are unique per write, so concurrent workers never clobber
   each other's parts). It then returns the shard's per-row numbers (a few floats per row for
   losses, the vectors for embeddings), which the parent assembles in input order; when the
   worker's part is not visible to the parent (a Ray node without a shared file system) the
   parent writes it.
3. **Backends.** ``backend=None`` (the default) or the sequential backend runs the same shards
   in this process with the caller's model, so the default path and every backend compute
   identical shards and give identical numbers (bitwise for fp32 on one device type).

``SHEDKIT_SHARD_DELAY`` (seconds, float): a **test/debug knob**. When set, every shard
sleeps that long after computing and before writing its part, so a test can reliably kill a
run between shards. Leave it unset in production.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

from shedkit.errors import ShedkitError
from shedkit.execute.backends import Backend, SequentialBackend, get_backend

SHARD_DELAY_ENV = "SHEDKIT_SHARD_DELAY"


def check_shard_size(shard_size: int | None, default: int) -> int:
    """``shard_size`` or ``default``; an error unless it is a positive integer."""
    size = default if shard_size is None else shard_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ShedkitError(f"shard_size must be a positive integer, got {shard_size!r}")
    return size


def plan_shards(missing: Sequence[int], shard_size: int) -> list[list[int]]:
    """Group ``missing`` positions (any order) by the window of ``shard_size`` consecutive
    positions they fall in; shards in window order, positions ascending within each."""
    size = check_shard_size(shard_size, 1)
    shards: dict[int, list[int]] = {}
    for pos in sorted(missing):
        shards.setdefault(pos // size, []).append(pos)
    return [shards[k] for k in sorted(shards)]


def shard_delay() -> None:
    """Sleep ``$SHEDKIT_SHARD_DELAY`` seconds when set (test/debug knob, see module doc)."""
    value = os.environ.get(SHARD_DELAY_ENV)
    if not value:
        return
    try:
        seconds = float(value)
    except ValueError:
        raise ShedkitError(f"${SHARD_DELAY_ENV} must be a number of seconds, got {value!r}") from None
    if seconds > 0:
        time.sleep(seconds)


def runs_inline(backend: Backend | None) -> bool:
    """True when shards run in this process (no backend, or the sequential one)."""
    return backend is None or isinstance(backend, SequentialBackend)


@contextmanager
def opened_backend(backend: "str | Backend | None") -> Iterator[Backend | None]:
    """``backend`` as an object: None stays None (run inline); a name is created here (with the
    backend's default workers) and closed on exit; an instance is passed through, left open."""
    if backend is None or isinstance(backend, Backend):
        yield backend
        return
    made = get_backend(backend)
    try:
        yield made
    finally:
        made.close()


def run_shards(backend: Backend | None, jobs: Sequence[Any], remote: Callable[[Any], Any],
               local: Callable[[Any], Any]) -> Iterator[tuple[int, Any]]:
    """``(index, result)`` of every job, in completion order: ``local(job)`` in this process
    when :func:`runs_inline`, else ``remote(job)`` (a picklable top-level function) on the
    backend's workers."""
    if runs_inline(backend):
        for i, job in enumerate(jobs):
            yield i, local(job)
        return
    yield from backend.run(remote, list(jobs))
