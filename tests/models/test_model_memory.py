"""Memory between stages: bucketed padding widths on CPU (a bounded number of kernel shapes) and
freed heap handed back to the OS (release_memory)."""

import sys

import numpy as np
import pytest

from shedkit.models import scoring
from shedkit.models.encode import encode_record
from shedkit.models.scoring import collate, padded_width, token_logprobs
from shedkit.util.memory import release_memory, resident_mb


def test_padded_width_bounds_the_shapes_and_the_overhead():
    widths = [padded_width(n) for n in range(1, 1025)]
    assert all(w >= n for n, w in zip(range(1, 1025), widths))
    assert all(a <= b for a, b in zip(widths, widths[1:]))  # monotone
    assert len(set(widths)) == 24  # 8 up to 64, then four per octave
    assert all(w - n < 8 for n, w in zip(range(1, 65), widths))  # short: a multiple of 8
    assert max(w / n for n, w in zip(range(64, 1025), widths[63:])) <= 1.25  # long: at most 25% more
    assert [padded_width(n) for n in (64, 65, 128, 129, 256, 257)] == [64, 80, 128, 160, 256, 320]


def test_cpu_batches_are_padded_to_a_bucket_and_other_devices_are_not():
    from shedkit.models.encode import Encoded

    seqs = [Encoded(np.arange(70, dtype=np.int64), np.r_[np.zeros(30), np.ones(40)].astype(np.int16))]
    assert collate(seqs, 0, "cpu").input_ids.shape == (1, 80)  # 69 positions -> 80
    assert collate(seqs, 0, "meta").input_ids.shape == (1, 69)
    b = collate(seqs, 0, "cpu")
    assert int(b.attention_mask.sum()) == 69 and len(b.targets) == 40


def test_bucketed_padding_leaves_every_real_token_logprob_unchanged(tiny, rows, monkeypatch):
    model, tok = tiny
    seqs = [encode_record(tok, r, 1024) for r in rows]
    bucketed = token_logprobs(model, seqs, pad_id=0, batch_size=4, precision="fp32")
    monkeypatch.setattr(scoring, "PAD_TO_BUCKETS", False)
    exact = token_logprobs(model, seqs, pad_id=0, batch_size=4, precision="fp32")
    for a, b in zip(bucketed, exact):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's")
def test_release_memory_returns_freed_heap():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")

    # many mid-sized blocks (below glibc's mmap threshold, so they live in the heap), then free
    # all but the last: the heap cannot shrink from its top, only a trim gives the pages back
    blocks = [bytearray(64 * 1024) for _ in range(3000)]  # ~190 MB
    for b in blocks:
        b[::4096] = b"\1" * len(b[::4096])
    keep = blocks[-1]
    del blocks
    before = resident_mb()
    assert release_memory() is True
    after = resident_mb()
    assert before - after > 100, (before, after)
    del keep


def test_chunked_head_loss_equals_the_whole_logits_loss_and_its_gradients(tiny, rows):
    """target_nll with tiny chunks (head + softmax under activation checkpointing, so the
    [N, V] logits never exist at once) gives every target's loss and the LoRA gradients of the
    whole-logits cross-entropy (fp32)."""
    import copy

    import torch

    from shedkit.models.config import TrainConfig
    from shedkit.models.gradients import attach_lora
    from shedkit.models.scoring import target_logits, target_nll

    model, tok = tiny
    lora = attach_lora(copy.deepcopy(model), TrainConfig(max_length=64, precision="fp32", lora_r=4), seed=0)
    with torch.no_grad():  # B = 0 at initialisation: make every gradient non-zero
        gen = torch.Generator().manual_seed(1)
        for p in lora.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    batch = collate([encode_record(tok, r, 64) for r in rows[:6]], 0, "cpu")
    params = [p for p in lora.parameters() if p.requires_grad]

    def loss_and_grads(fn):
        nll = fn()
        grads = torch.autograd.grad(nll.sum(), params)
        return nll.detach(), grads

    whole, g_whole = loss_and_grads(lambda: torch.nn.functional.cross_entropy(
        target_logits(lora, batch).float(), batch.targets, reduction="none"))
    assert len(batch.targets) > 3 * 7  # several chunks, the last one partial
    chunked, g_chunked = loss_and_grads(lambda: target_nll(lora, batch, head_chunk=7))
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)
    for a, b in zip(g_chunked, g_whole):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    with torch.no_grad():  # no gradients: plain chunks, same losses
        torch.testing.assert_close(target_nll(lora, batch, head_chunk=7), whole, rtol=1e-5, atol=1e-6)


def test_the_heads_row_count_is_bucketed_on_cpu_and_every_targets_loss_unchanged(tiny, rows, monkeypatch):
    """The head sees a padded row count (a batch's target count, bucketed, so a long run meets
    few matmul shapes); the padding rows are dropped, and each target's log-probability and the
    training loss's gradients equal the unpadded head's (fp32)."""
    import torch

    from shedkit.models.scoring import _decoder_and_head, target_logits, target_nll

    model, tok = tiny
    head = _decoder_and_head(model)[1]
    seen = []
    handle = head.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    batches = [collate([encode_record(tok, r, 1024) for r in rows[i : i + 3]], 0, "cpu") for i in (0, 3, 6)]
    try:
        padded = [target_logits(model, b) for b in batches]
        counts = [len(b.targets) for b in batches]
        assert seen == [padded_width(n) for n in counts] and seen != counts  # at least one was padded
        assert [p.shape[0] for p in padded] == counts
        seen.clear()
        chunked = target_nll(model, batches[0], head_chunk=16)
        n = counts[0]
        assert n > 16 and seen == [16] * (n // 16) + ([padded_width(n % 16)] if n % 16 else [])
    finally:
        handle.remove()
    monkeypatch.setattr(scoring, "PAD_TO_BUCKETS", False)
    for b, p in zip(batches, padded):
        torch.testing.assert_close(p, target_logits(model, b), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(chunked, target_nll(model, batches[0], head_chunk=16), rtol=1e-5, atol=1e-6)
