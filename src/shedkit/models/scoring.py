"""The one batched forward pass that every loss, objective and training step goes through.

``target_logits`` runs the decoder and applies the output head only at the positions that
predict a target token (response tokens), which skips most of the head's cost on prompts.
``token_logprobs`` scores many sequences in length-sorted batches (longest first, so a batch
pads to within a few tokens of its own rows and out-of-memory shows up on the first batch),
and returns each sequence's target log-probabilities in input order.

Batches are right-padded and run *without* an attention mask: under causal attention a real
token only sees the tokens before it, never the padding after it, so its hidden state, its
loss and its gradient are exactly those of the unpadded row; and a mask-free batch takes
SDPA's is_causal kernel, measured 10-25% faster on CPU than the explicit-mask path. (Pad
positions compute values nobody reads.) This holds for causal decoders with positions
0..n-1, i.e. every AutoModelForCausalLM; a left-padded batch would need the mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from shedkit.models.device import autocast, model_device
from shedkit.models.encode import Encoded
from shedkit.util.memory import release_memory

# configs whose head output is transformed before the softmax: use the model's own logits
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")
HEAD_CHUNK = 2048  # target positions per head matmul when scoring (bounds logits memory)
TRAIN_HEAD_CHUNK = 512  # target positions per head+loss chunk when gradients flow (target_nll)
MAX_PADDING = 0.1  # most share of a scoring batch's tokens that may be padding
PAD_TO_BUCKETS = True  # CPU batches padded to a few widths (see padded_width); False for comparisons only


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, L] (each sequence without its last token), right-padded
    attention_mask: torch.Tensor  # [B, L]: 1 on real tokens (kept for callers; the forward needs none)
    rows: torch.Tensor  # [N] batch row of each target
    positions: torch.Tensor  # [N] hidden-state position that predicts each target
    targets: torch.Tensor  # [N] target token ids
    counts: list[int]  # targets per sequence, in batch order
    groups: list[np.ndarray]  # the group mark of each target, per sequence


def padded_width(n: int) -> int:
    """``n`` rounded up to one of at most four widths per octave (8, 16, 24, 32, 40, 48, 56, 64,
    80, 96, ..., 128, 160, ...): at most 25% more positions, usually ~10%.

    Why: on CPU, oneDNN keeps its kernels and scratch buffers per input shape, about 18 MB per
    padded width for a SmolLM2 LoRA step of 8 rows (measured); with every width from 1 to 256 a
    long run's resident memory grows by gigabytes. Bucketed widths bound that to a few dozen shapes.
    Right padding never changes a real token's output (causal attention, no loss on padding)."""
    if n <= 64:
        return -(-n // 8) * 8
    step = 1 << (max(n - 1, 1).bit_length() - 3)
    return -(-n // step) * step


def collate(seqs: Sequence[Encoded], pad_id: int, device: torch.device) -> Batch:
    """Right-padded inputs (sequence minus its last token) and the flat target index. On CPU the
    width is bucketed (``padded_width``) so a long run meets few distinct shapes."""
    width = max(max(len(s) - 1 for s in seqs), 1)
    if torch.device(device).type == "cpu" and PAD_TO_BUCKETS:
        width = padded_width(width)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    rows, positions, targets, counts, groups = [], [], [], [], []
    for b, s in enumerate(seqs):
        n = len(s) - 1
        ids[b, :n] = s.ids[:-1]
        mask[b, :n] = 1
        where = np.flatnonzero(s.groups[1:]) + 1  # target token positions in the sequence
        rows.append(np.full(len(where), b))
        positions.append(where - 1)
        targets.append(s.ids[where])
        counts.append(len(where))
        groups.append(s.groups[where])
    cat = lambda xs: torch.from_numpy(np.concatenate(xs).astype(np.int64)).to(device)  # noqa: E731
    return Batch(
        torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device),
        cat(rows), cat(positions), cat(targets), counts, groups,
    )


def _head(head, hidden: torch.Tensor) -> torch.Tensor:
    """``head(hidden)`` with, on CPU, the row count padded to a bucket (``padded_width``) and the
    padding rows dropped again.

    Why: the head's row count is a batch's number of target tokens, a new value almost every
    batch; oneDNN keeps kernels per shape (measured: a bf16 SmolLM2 head over 300 batches of
    100-700 rows grew the resident peak by 430 MB with the exact counts, 90 MB bucketed, and ran
    9% faster bucketed). Each row's output is its own dot products, so padding changes no
    real row beyond the matmul's float rounding."""
    n = hidden.shape[0]
    if hidden.device.type != "cpu" or not PAD_TO_BUCKETS or n == 0:
        return head(hidden)
    width = padded_width(n)
    if width == n:
        return head(hidden)
    pad = hidden.new_zeros((width - n,) + tuple(hidden.shape[1:]))
    return head(torch.cat([hidden, pad]))[:n]


def _decoder_and_head(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if any(getattr(base.config, a, None) not in (None, 1, 1.0) for a in _LOGIT_TRANSFORMS):
        return None
    try:
        decoder, head = base.get_decoder(), base.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    if decoder is None or head is None or decoder is base:
        return None
    return decoder, head


def target_logits(model, batch: Batch, head_chunk: int | None = None) -> torch.Tensor:
    """Logits ``[N, V]`` (float32) at the positions that predict the batch's targets."""
    split = _decoder_and_head(model)
    if split is None:  # generic path: the model's own (full) logits
        logits = model(input_ids=batch.input_ids, use_cache=False).logits
        return logits[batch.rows, batch.positions].float()
    decoder, head = split
    picked = _target_hidden(decoder, batch)
    if head_chunk is None or len(picked) <= head_chunk:
        return _head(head, picked).float()
    return torch.cat([_head(head, picked[i : i + head_chunk]).float() for i in range(0, len(picked), head_chunk)])


def _target_hidden(decoder, batch: Batch) -> torch.Tensor:
    """The decoder's last hidden states ``[N, d]`` at the positions that predict the targets."""
    hidden = decoder(input_ids=batch.input_ids, use_cache=False).last_hidden_state
    return hidden[batch.rows, batch.positions]


def target_nll(model, batch: Batch, head_chunk: int | None = None) -> torch.Tensor:
    """Each target's negative log-likelihood, float32 ``[N]``, differentiable.

    With gradients on and more than ``head_chunk`` targets (default ``TRAIN_HEAD_CHUNK``), the
    head and the softmax run chunk by chunk under activation checkpointing: only one chunk's
    ``[chunk, V]`` logits (and their softmax and gradient) are alive at a time, and backward
    recomputes each chunk's head matmul. With a 49k vocabulary, 8 rows of ~150 response tokens
    hold ~1,200 x 49,152 float32 logits (236 MB, three copies in backward); a chunk of 512 holds
    100 MB. Each target's loss is the same as from ``target_logits``; only the matmul's row
    blocking (so float rounding) can differ."""
    chunk = TRAIN_HEAD_CHUNK if head_chunk is None else int(head_chunk)
    split = _decoder_and_head(model)
    if split is None:
        return torch.nn.functional.cross_entropy(target_logits(model, batch), batch.targets, reduction="none")
    decoder, head = split
    picked = _target_hidden(decoder, batch)

    def nll(h, t):
        return torch.nn.functional.cross_entropy(_head(head, h).float(), t, reduction="none")

    if len(picked) <= chunk:
        return nll(picked, batch.targets)
    from torch.utils.checkpoint import checkpoint

    run = (lambda h, t: checkpoint(nll, h, t, use_reentrant=False)) if torch.is_grad_enabled() else nll
    return torch.cat([run(picked[i : i + chunk], batch.targets[i : i + chunk]) for i in range(0, len(picked), chunk)])


def target_logprobs(model, batch: Batch, head_chunk: int | None = None) -> torch.Tensor:
    """log p(target) for each target of the batch, float32 ``[N]``."""
    logits = target_logits(model, batch, head_chunk)
    return torch.log_softmax(logits, dim=-1).gather(1, batch.targets[:, None]).squeeze(1)


def length_sorted_batches(lengths: Sequence[int], batch_size: int, max_batch_tokens: int,
                          max_padding: float = MAX_PADDING) -> list[list[int]]:
    """Indices grouped longest first. A batch holds at most ``batch_size`` rows and
    ``max_batch_tokens`` padded tokens, and closes before its padding would exceed
    ``max_padding`` of its padded tokens (so a long tail of lengths gets small batches rather
    than wasted compute); every batch has at least one row."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches, current, real = [], [], 0
    for i in order:
        if current:
            width, rows = lengths[current[0]], len(current) + 1
            if (rows > batch_size or rows * width > max_batch_tokens
                    or rows * width - (real + lengths[i]) > max_padding * rows * width):
                batches.append(current)
                current, real = [], 0
        current.append(i)
        real += lengths[i]
    if current:
        batches.append(current)
    return batches


def pad_id_of(tokenizer) -> int:
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if tid is not None:
            return int(tid)
    return 0  # pragma: no cover


@torch.inference_mode()
def token_logprobs(
    model,
    seqs: Sequence[Encoded],
    pad_id: int,
    batch_size: int = 16,
    max_batch_tokens: int = 8192,
    precision: str = "auto",
    progress: bool = False,
    desc: str = "scoring",
    sort: bool = True,
) -> list[np.ndarray]:
    """Per sequence, the float64 log-probabilities of its target tokens, in input order.

    sort -- length-sorted batches (default); False keeps input order (for comparisons only).
    """
    from shedkit.util.progress import progress_bar

    device = model_device(model)
    was_training = model.training
    model.eval()
    lengths = [max(len(s) - 1, 1) for s in seqs]
    if sort:
        batches = length_sorted_batches(lengths, batch_size, max_batch_tokens)
    else:
        batches = [list(range(i, min(i + batch_size, len(seqs)))) for i in range(0, len(seqs), batch_size)]
    out: list[np.ndarray] = [np.zeros(0)] * len(seqs)
    try:
        with progress_bar(len(seqs), desc, enabled=progress, transient=True) as advance:
            for idx in batches:
                batch = collate([seqs[i] for i in idx], pad_id, device)
                with autocast(precision, device):
                    lp = target_logprobs(model, batch, head_chunk=HEAD_CHUNK)
                parts = np.split(lp.double().cpu().numpy(), np.cumsum(batch.counts)[:-1])
                for i, part in zip(idx, parts):
                    out[i] = part
                advance(len(idx))
    finally:
        model.train(was_training)
        release_memory()
    return out
