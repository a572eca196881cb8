import math

import numpy as np
import pytest
import torch

from shedkit.errors import ShedkitError
from shedkit.models import ScoreConfig, response_losses
from shedkit.models import losses as losses_mod
from shedkit.models.encode import encode_record, encode_response_alone
from shedkit.models.scoring import token_logprobs

from helpers import rec

FP32 = ScoreConfig(precision="fp32")


def reference_loss(model, enc, group=None):
    """Straightforward, unbatched: the full logits of one sequence, mean NLL at its targets."""
    ids = torch.as_tensor(enc.ids)[None]
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].double(), -1)
    sel = [p for p in range(1, len(enc.ids)) if enc.groups[p] > 0 and (group is None or enc.groups[p] == group)]
    return float(np.mean([-logp[p - 1, enc.ids[p]].item() for p in sel])), len(sel)


def test_batched_losses_match_unbatched_reference(tiny, rows):
    model, tok = tiny
    res = response_losses(model, tok, rows, ScoreConfig(precision="fp32", batch_size=4), progress=False)
    assert list(res.positions) == list(range(len(rows))) and res.ids == [r.id for r in rows]
    for r, loss, n in zip(rows, res.loss, res.n_tokens):
        ref, ref_n = reference_loss(model, encode_record(tok, r, FP32.max_length))
        assert n == ref_n
        assert abs(loss - ref) < 1e-4
    assert np.all(np.isfinite(res.loss))


def test_padding_batch_size_and_order_change_nothing(tiny, rows):
    model, tok = tiny
    seqs = [encode_record(tok, r, 1024) for r in rows]
    base = token_logprobs(model, seqs, pad_id=0, batch_size=1, precision="fp32")
    for kw in (dict(batch_size=7), dict(batch_size=3, sort=False), dict(batch_size=16, max_batch_tokens=64)):
        other = token_logprobs(model, seqs, pad_id=0, precision="fp32", **kw)
        for a, b in zip(base, other):
            np.testing.assert_allclose(a, b, atol=1e-5)
    # a different pad id changes nothing either
    other = token_logprobs(model, seqs, pad_id=5, batch_size=16, precision="fp32")
    for a, b in zip(base, other):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # results come back in input order whatever the order of the input
    perm = np.random.default_rng(0).permutation(len(rows))
    shuffled = response_losses(model, tok, [rows[i] for i in perm], FP32, progress=False)
    plain = response_losses(model, tok, rows, FP32, progress=False)
    np.testing.assert_allclose(shuffled.loss, plain.loss[perm], atol=1e-6)


def test_ifd_matches_reference(tiny, rows):
    model, tok = tiny
    res = response_losses(model, tok, rows, FP32, ifd=True, progress=False)
    for r, last, alone, ifd in zip(rows, res.loss_last, res.loss_alone, res.ifd):
        enc = encode_record(tok, r, 1024)
        ref_last, _ = reference_loss(model, enc, group=int(enc.groups.max()))
        ref_alone, _ = reference_loss(model, encode_response_alone(tok, r, 1024))
        assert abs(last - ref_last) < 1e-4 and abs(alone - ref_alone) < 1e-4
        assert abs(ifd - ref_last / ref_alone) < 1e-4
    single = [i for i, r in enumerate(rows) if sum(t.role == "assistant" for t in r.turns) == 1]
    np.testing.assert_allclose(res.loss_last[single], res.loss[single])
    multi = rows.index(rows[9])
    assert res.loss_last[multi] != res.loss[multi]


def test_empty_responses_error_or_skip_never_nan(tiny, rows):
    model, tok = tiny
    empty = rec(99, ("user", "Say nothing."), ("assistant", "  "))
    data = rows[:3] + [empty] + rows[3:5]
    with pytest.raises(ShedkitError, match="empty response"):
        response_losses(model, tok, data, FP32, progress=False)
    res = response_losses(model, tok, data, FP32, on_empty="skip", ifd=True, progress=False)
    assert res.skipped == [(3, empty.id)]
    assert list(res.positions) == [0, 1, 2, 4, 5]
    assert np.all(np.isfinite(res.loss)) and np.all(np.isfinite(res.ifd))
    col = res.column("loss", len(data))
    assert math.isnan(col[3]) and col[4] == res.loss[3]


def test_cache_is_hit_on_rerun(tiny, rows, tmp_path, monkeypatch):
    model, tok = tiny
    first = response_losses(model, tok, rows[:6], FP32, cache_dir=tmp_path, progress=False)
    assert first.cached == 0
    parts = list((tmp_path / "losses").glob("*/part-*.jsonl"))
    assert parts and all(not p.name.startswith(".") for p in parts)
    calls = []
    real = losses_mod.token_logprobs
    monkeypatch.setattr(losses_mod, "token_logprobs", lambda m, seqs, **kw: calls.append(len(seqs)) or real(m, seqs, **kw))
    again = response_losses(model, tok, rows[:6], FP32, cache_dir=tmp_path, progress=False)
    assert calls == [] and again.cached == 6
    np.testing.assert_array_equal(again.loss, first.loss)
    more = response_losses(model, tok, rows, FP32, cache_dir=tmp_path, progress=False)  # only the 4 new rows run
    assert calls == [4] and more.cached == 6
    np.testing.assert_array_equal(more.loss[:6], first.loss)
    response_losses(model, tok, rows, FP32, cache_dir=tmp_path, ifd=True, progress=False)  # IFD missing: all rerun
    assert calls[1:] == [10, 10]
    # another model (or other settings) is another cache key
    other = response_losses(model, tok, rows[:2], ScoreConfig(precision="fp32", max_length=64), cache_dir=tmp_path, progress=False)
    assert other.cached == 0


def test_model_fingerprint_tracks_weights(tiny):
    import copy

    model, _ = tiny
    fp = losses_mod.model_fingerprint(model)
    clone = copy.deepcopy(model)
    assert losses_mod.model_fingerprint(clone) == fp
    with torch.no_grad():
        next(clone.parameters())[0, 0] += 1e-3
    assert losses_mod.model_fingerprint(clone) != fp


def test_length_sorted_batches_bound_padding_rows_and_tokens():
    from shedkit.models.scoring import length_sorted_batches

    lengths = [512, 30, 100, 98, 97, 300, 99, 31, 29, 100, 5]
    batches = length_sorted_batches(lengths, batch_size=3, max_batch_tokens=1000, max_padding=0.05)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        width = lengths[b[0]]
        assert len(b) <= 3 and len(b) * width <= 1000 or len(b) == 1
        assert all(lengths[i] <= width for i in b)
        assert len(b) == 1 or len(b) * width - sum(lengths[i] for i in b) <= 0.05 * len(b) * width
    assert batches[0] == [0] and [5] in batches  # the long tail runs alone
    assert [2, 9, 6] in batches  # near-equal lengths share a batch
