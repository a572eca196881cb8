"""Dry-run estimates of the stages that run the language model forward (see
``pipeline/planning.py``): loading it and scoring the pool's losses (base, response-alone,
reference); and what the training stages (``pipeline/plan_training.py``) share with them: the
loaded model, the pool's tokens, the usable rows, the memory of a batch.

The pool's work is counted in tokens: each row encoded as the stage encodes it (the model's
tokenizer and template), clipped at the stage's ``max_length`` (pools up to ``EXACT_TOKEN_ROWS``
rows are counted row by row; larger ones by tokens ≈ a + b·characters fitted on a seeded
sample of ``TOKEN_SAMPLE`` rows). A loss stage's seconds are two full batches of rows of like
length, taken where the pool's tokens lie, scored through the stage's own code and scaled by
tokens; rows the loss cache already holds are not counted (the run reads them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from shedkit.pipeline.planning import GB, Planner, Stage, forward_flops, measured_peak_gb, number, timed
from shedkit.util.defaults import DEFAULT_MODEL

EXACT_TOKEN_ROWS = 20_000  # pools up to this many rows: every row tokenized (~0.3 ms a row)
TOKEN_SAMPLE = 2_000  # larger pools: rows tokenized to fit tokens = a + b * characters
SCORE_BATCH = 16  # a loss stage's rate: two batches of at most this many rows scored
BYTES = 4  # per activation / weight element (fp32; bf16 autocast keeps fp32 masters: an upper bound)


@dataclass
class LM:
    spec: str
    model: Any
    tokenizer: Any
    seconds: float
    params: int
    hidden: int
    heads: int
    layers: int
    vocab: int
    intermediate: int
    weights_gb: float
    peak_gb: float  # measured resident peak after loading


def lm(p: Planner) -> LM:
    """The run's language model, loaded (and timed) once per plan."""
    def load() -> LM:
        from shedkit.models.loading import shared_model

        spec = str(p.option("model", DEFAULT_MODEL))
        start = time.perf_counter()
        model, tok = shared_model(spec, device=p.option("device"))
        seconds = time.perf_counter() - start
        params = {id(t): t for t in model.parameters()}.values()
        cfg = model.config
        hidden = int(getattr(cfg, "hidden_size", 0) or 0)
        return LM(spec, model, tok, seconds, sum(t.numel() for t in params), hidden,
                  int(getattr(cfg, "num_attention_heads", 1) or 1), int(getattr(cfg, "num_hidden_layers", 1) or 1), int(getattr(cfg, "vocab_size", 0) or 0),
                  int(getattr(cfg, "intermediate_size", 4 * hidden) or 4 * hidden),
                  sum(t.numel() * t.element_size() for t in params) / GB, measured_peak_gb())
    return p.once("lm", load)


def load_model_stage(p: Planner) -> Stage:
    m = lm(p)
    return Stage("load_model", f"load {m.spec} ({number(m.params)} parameters)", f"1 model, {number(m.params)} params",
                 {"models": 1, "params": m.params}, m.seconds,
                 f"measured: loaded here in {m.seconds:.2f} s (0 when this process already held it)",
                 max(m.peak_gb, p.baseline_gb + m.weights_gb),
                 f"measured: resident peak after loading; weights {m.weights_gb:.3f} GB")


# -- tokens -----------------------------------------------------------------------------------

def spread(lengths: np.ndarray, candidates: Sequence[int], k: int) -> list[int]:
    """``k`` of ``candidates`` spread evenly over their lengths (shortest to longest)."""
    order = sorted(candidates, key=lambda i: (lengths[i], i))
    if len(order) <= k:
        return order
    return sorted({order[min(len(order) - 1, int((j + 0.5) * len(order) / k))] for j in range(k)})


def windows(lengths: np.ndarray, candidates: Sequence[int], size: int, quantiles=(0.25, 0.75)) -> list[int]:
    """Rows that batch as the run batches them: for each quantile of the pool's tokens (the
    row where that share of all tokens is reached, rows sorted by length), the ``size`` rows
    of nearest length around it -- so a timed sample is made of full, evenly padded batches,
    taken where the pool's work lies."""
    order = sorted(candidates, key=lambda i: (lengths[i], i))
    if len(order) <= size * len(quantiles):
        return sorted(order)
    cum = np.cumsum([lengths[i] for i in order])
    picked: set[int] = set()
    for q in quantiles:
        at = int(np.searchsorted(cum, q * cum[-1]))
        start = max(0, min(at - size // 2, len(order) - size))
        picked.update(order[start: start + size])
    return sorted(picked)


def row_tokens(p: Planner, kind: str, config) -> tuple[np.ndarray, str]:
    """Unclipped tokens of each pool row as ``kind`` encodes it: "record" (the conversation,
    as scored and trained) or "alone" (IFD's response after one start token); 0 for rows with
    an empty response. Returns the lengths and how they were counted."""
    from shedkit.models.encode import encode_options, encode_record, has_empty_response
    from shedkit.models.truncation import NO_LIMIT
    from shedkit.pipeline.row_scores import encode_response_plain

    options = encode_options(config)
    key = ("tokens", kind, options["template"], options["train_on"], options["chat_template"])

    def count() -> tuple[np.ndarray, str]:
        tok = lm(p).tokenizer
        records = p.ctx.records
        if kind == "record":
            encode = lambda r: len(encode_record(tok, r, NO_LIMIT, **options))  # noqa: E731
            chars = lambda r: len(r.text)  # noqa: E731
        else:
            encode = lambda r: len(encode_response_plain(tok, r, NO_LIMIT, options["template"]))  # noqa: E731
            chars = lambda r: len(r.response)  # noqa: E731
        usable = [i for i, r in enumerate(records) if not has_empty_response(r)]
        out = np.zeros(len(records))
        if len(usable) <= EXACT_TOKEN_ROWS:
            for i in usable:
                out[i] = encode(records[i])
            return out, f"every row tokenized with {lm(p).spec}'s tokenizer"
        rng = np.random.default_rng(0)
        sample = rng.choice(usable, size=TOKEN_SAMPLE, replace=False)
        x = np.array([chars(records[i]) for i in sample], dtype=float)
        y = np.array([encode(records[i]) for i in sample], dtype=float)
        b, a = np.polyfit(x, y, 1) if np.ptp(x) > 0 else (0.0, float(y.mean()))
        for i in usable:
            out[i] = max(1.0, a + b * chars(records[i]))
        return out, (f"tokens = {a:.1f} + {b:.3f} x characters, fitted on {TOKEN_SAMPLE:,} rows tokenized with "
                     f"{lm(p).spec}'s tokenizer")
    return p.once(key, count)


def clipped(lengths: np.ndarray, max_length: int, rows: Sequence[int] | None = None) -> float:
    values = lengths if rows is None else lengths[list(rows)]
    return float(np.minimum(values, max_length).sum())


def usable_rows(p: Planner) -> list[int]:
    from shedkit.models.encode import has_empty_response

    return p.once("usable", lambda: [i for i, r in enumerate(p.ctx.records) if not has_empty_response(r)])


# -- memory -----------------------------------------------------------------------------------

def inference_gb(m: LM, batch_tokens: float) -> float:
    """One scoring batch: a layer's hidden states and MLP activations at a time, and one
    chunk of output-head logits (with its log-softmax). SmolLM2-135M, fp32, 4 rows of 512
    tokens: 0.99 GB measured, 1.17 GB by this formula."""
    from shedkit.models.scoring import HEAD_CHUNK

    hidden = batch_tokens * (4 * m.hidden + 2 * m.intermediate)
    return (hidden + min(batch_tokens, HEAD_CHUNK) * m.vocab * 3) * BYTES / GB


def training_gb(m: LM, rows: float, width: float, layers: int | None = None) -> float:
    """One training micro-batch of ``rows`` rows padded to ``width`` tokens: what each of the
    ``layers`` layers with gradients (default all; first-order's ``--fo-layers``: the frozen
    prefix below runs without keeping activations) keeps for the backward (~14 hidden-sized and
    6 MLP-sized vectors a token, and the attention weights, rows x heads x width²), and the
    logits with their softmax and gradient for one chunk of ``scoring.TRAIN_HEAD_CHUNK``
    targets (the head runs chunk by chunk under checkpointing). Calibrated on SmolLM2-135M,
    LoRA, fp32, 4 rows of 512 tokens (1,248 targets): 5.8 GB measured with the whole logits,
    6.1 GB by this formula then, which counts every token a target."""
    from shedkit.models.scoring import TRAIN_HEAD_CHUNK

    tokens = rows * width
    per_layer = tokens * (14 * m.hidden + 6 * m.intermediate) + rows * m.heads * width * width
    n_layers = m.layers if layers is None else max(1, min(int(layers), m.layers))
    return (n_layers * per_layer + min(tokens, TRAIN_HEAD_CHUNK) * m.vocab * 3) * BYTES / GB


def longest(lengths: np.ndarray, rows: Sequence[int], max_length: int) -> float:
    """The longest of ``rows`` (clipped at ``max_length``): the width of the widest batch."""
    return float(np.minimum(lengths[list(rows)], max_length).max()) if len(rows) else 1.0


def batch_tokens(lengths: np.ndarray, rows: Sequence[int], max_length: int, batch_size: int,
                 max_batch_tokens: int) -> float:
    """Padded tokens of the largest scoring batch: ``batch_size`` of the longest rows, capped by
    ``max_batch_tokens`` (never below one row)."""
    width = longest(lengths, rows, max_length)
    return max(width, min(batch_size * width, max_batch_tokens))


# -- loss scoring -----------------------------------------------------------------------------

def _scoring_rate(p: Planner, kind: str, config, ifd: bool = False) -> dict[str, Any]:
    """Seconds per token of scoring ``kind`` rows: two batches of rows of like length (at the
    pool's token quartiles, ``windows``) scored through the stage's own code (no cache),
    after a 2-row warm-up."""
    def measure() -> dict[str, Any]:
        from shedkit.models.losses import response_losses
        from shedkit.models.scoring import pad_id_of, token_logprobs
        from shedkit.pipeline.row_scores import encode_response_plain

        m, (lengths, _) = lm(p), row_tokens(p, kind, config)
        sample = windows(np.minimum(lengths, config.max_length), usable_rows(p), min(config.batch_size, SCORE_BATCH))
        records = [p.ctx.records[i] for i in sample]

        def score(rows) -> None:
            if kind == "record":
                response_losses(m.model, m.tokenizer, rows, config, ifd=ifd, on_empty="skip", progress=False)
            else:
                seqs = [encode_response_plain(m.tokenizer, r, config.max_length, config.template) for r in rows]
                token_logprobs(m.model, seqs, pad_id_of(m.tokenizer), batch_size=config.batch_size,
                               max_batch_tokens=config.max_batch_tokens, precision=config.precision)
        score(records[:2])
        seconds, reps = timed(lambda: score(records))
        tokens = clipped(lengths, config.max_length, sample)
        return {"rate": seconds / max(tokens, 1.0), "rows": len(sample), "tokens": tokens, "seconds": seconds,
                "reps": reps, "peak_gb": measured_peak_gb()}
    return p.once(("score-rate", kind, ifd, config), measure)


def _cached_losses(p: Planner, config, kind: str, model_id: str | None = None) -> set[str]:
    """Ids of the rows the loss cache already holds for this stage (the run reads them)."""
    from shedkit.models.device import model_device
    from shedkit.models.loading import model_identity
    from shedkit.models.losses import LossCache, loss_cache_key
    from shedkit.pipeline.row_scores import response_alone_cache_key

    m = lm(p)
    make_key = response_alone_cache_key if kind == "alone" else loss_cache_key
    key, meta = make_key(model_id or model_identity(m.spec), config, model_device(m.model).type)
    entries = LossCache(p.ctx.cache_dir, key, meta).entries()
    field_ = "loss_alone" if kind == "alone" else "loss"
    return {i for i, e in entries.items() if field_ in e}


def loss_stage(p: Planner, name: str, does: str, kind: str = "record", ifd: bool = False,
               model_id: str | None = None) -> Stage:
    """A pass of the model over the pool's rows: ``kind`` "record" (response losses; ``ifd``
    adds lobass's response-alone pass) or "alone" (IFD's denominator). ``model_id``: the
    loss cache's name for the model (a reference, priced like the base: same architecture)."""
    from shedkit.pipeline.row_scores import score_config_from

    m, config = lm(p), score_config_from(p.ctx)
    lengths, how = row_tokens(p, kind, config)
    cached = _cached_losses(p, config, kind, model_id)
    rows = [i for i in usable_rows(p) if p.ctx.records[i].id not in cached]
    tokens = clipped(lengths, config.max_length, rows)
    if ifd:
        alone, _ = row_tokens(p, "alone", config)
        tokens += clipped(alone, config.max_length, rows)
    rate = _scoring_rate(p, kind, config, ifd)
    seconds = rate["rate"] * tokens
    skipped = len(p.ctx.records) - len(usable_rows(p))
    work = f"{len(rows):,} rows, {number(tokens)} tokens" + (f" ({len(usable_rows(p)) - len(rows):,} cached)"
                                                             if len(rows) < len(usable_rows(p)) else "")
    bt = batch_tokens(lengths, rows or usable_rows(p), config.max_length, config.batch_size, config.max_batch_tokens)
    act = inference_gb(m, bt)
    return Stage(
        name, does, work, {"rows": len(rows), "tokens": tokens, "cached_rows": len(usable_rows(p)) - len(rows),
                           "empty_rows": skipped},
        seconds,
        f"timed {rate['rows']} rows ({number(rate['tokens'])} tokens, median of {rate['reps']} run(s): "
        f"{rate['seconds']:.3g} s): {rate['rate']:.3g} s/token x {number(tokens)} tokens (tokens: {how}, "
        f"clipped at max_length {config.max_length})",
        max(rate["peak_gb"], p.baseline_gb + m.weights_gb + act),
        f"weights {m.weights_gb:.3f} GB + activations {act:.3f} GB (largest batch {number(bt)} tokens) over the "
        f"process's {p.baseline_gb:.2f} GB; measured peak after the sample {rate['peak_gb']:.2f} GB",
        flops=forward_flops(m.params, tokens))
