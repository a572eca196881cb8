"""Loss scoring sharded over the backends: the process pool gives the sequential numbers bit for
bit (fp32), every shard is one cache part, a rerun computes only the shards that are missing,
and a worker refuses a model that is not the driver's. (SIGKILL mid-run: test_sharded_losses_kill.py)"""

import json

import numpy as np
import pytest

from shedkit.errors import ShedkitError
from shedkit.execute import ProcessPoolBackend, WorkerMismatchError
from shedkit.models import losses as losses_mod
from shedkit.models.losses import response_losses

from sharded_loss_helpers import FP32, TINY_ID, assert_same, make_rows, parts


@pytest.fixture(scope="module")
def pool():
    with ProcessPoolBackend(workers=2, threads_per_worker=1) as backend:
        yield backend


def test_process_pool_gives_the_sequential_numbers(tiny, pool, tmp_path):
    model, tok = tiny
    rows = make_rows(22)
    rows.insert(5, rows[2])  # a duplicate row is scored once
    seq = response_losses(model, tok, rows, FP32, ifd=True, shard_size=4, progress=False)
    assert seq.shards == 6 and seq.cached == 0  # 22 distinct rows in windows of 4 (one duplicate)
    par = response_losses(model, tok, rows, FP32, ifd=True, shard_size=4, progress=False, backend=pool,
                          model_spec="tiny-random", cache_dir=tmp_path, model_id=TINY_ID)
    assert_same(seq, par, ifd=True)
    assert par.shards == 6 and len(parts(tmp_path)) == 6  # one cache part per shard
    # the model given as a spec string: nothing is recomputed, the same numbers come back
    again = response_losses("tiny-random", None, rows, FP32, ifd=True, shard_size=4, progress=False,
                            backend=pool, cache_dir=tmp_path, device="cpu")
    assert again.shards == 0 and again.cached == len(rows)
    assert_same(seq, again, ifd=True)


def test_sequential_runs_shards_and_resumes_only_the_missing_ones(tiny, tmp_path, monkeypatch):
    model, tok = tiny
    rows = make_rows(20)
    first = response_losses(model, tok, rows, FP32, shard_size=6, cache_dir=tmp_path, model_id=TINY_ID, progress=False)
    assert first.shards == 4 and len(parts(tmp_path)) == 4
    lost = parts(tmp_path)[0]
    lost_ids = {json.loads(line)["id"] for line in lost.read_text().splitlines()}
    lost.unlink()  # as if that shard had been killed before it finished
    seen = []
    real = losses_mod._score_rows
    monkeypatch.setattr(losses_mod, "_score_rows", lambda m, t, recs, *a, **k: seen.append([r.id for r in recs]) or real(m, t, recs, *a, **k))
    again = response_losses(model, tok, rows, FP32, shard_size=6, cache_dir=tmp_path, model_id=TINY_ID, progress=False)
    assert len(seen) == 1 and set(seen[0]) == lost_ids  # exactly the lost shard, as one shard
    assert again.shards == 1 and again.cached == len(rows) - len(lost_ids)
    assert_same(first, again)


def test_a_backend_needs_the_model_spec(tiny, rows):
    model, tok = tiny
    with pytest.raises(ShedkitError, match="model_spec"):
        response_losses(model, tok, rows, FP32, backend=ProcessPoolBackend(workers=1), progress=False)
    # the sequential backend by name runs inline with the caller's model
    res = response_losses(model, tok, rows, FP32, backend="sequential", shard_size=3, progress=False)
    assert_same(res, response_losses(model, tok, rows, FP32, shard_size=3, progress=False))


def test_worker_refuses_a_model_that_is_not_the_drivers(tiny):
    import copy

    import torch

    model, _ = tiny
    recipe = losses_mod._model_recipe("tiny-random", model, None, False, FP32, "cpu")
    recipe.check(model)  # the same weights pass
    other = copy.deepcopy(model)
    with torch.no_grad():
        next(other.parameters())[0, 0] += 1e-3
    with pytest.raises(WorkerMismatchError, match="other weights"):
        recipe.check(other)
    with pytest.raises(WorkerMismatchError, match="on cuda in the driver"):
        losses_mod._model_recipe("tiny-random", None, "cpu", False, FP32, "cuda").check(model)
    if not torch.cuda.is_available():  # a worker without the driver's GPU refuses before loading anything
        with pytest.raises(WorkerMismatchError, match="gpus-per-job"):
            losses_mod._model_recipe("tiny-random", None, "cuda", False, FP32, "cuda").load()
