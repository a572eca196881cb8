"""The model layer on SmolLM2-135M-Instruct: load, forward, LoRA step, loss-scorer throughput.

Sections (all by default; ``--sections load,forward,lora,scorer``):

* ``load``    first load (GGUF dequantisation + safetensors conversion, into a fresh temp cache)
              against cached loads (``--repeats`` of them, median), torch/transformers already
              imported (their import time is reported separately);
* ``forward`` tokens/s of a plain forward pass (full logits, no grad) on ``--forward-batch``
              rows of random token ids, fp32 against bf16 autocast, ``--repeats`` runs each,
              median (one warm-up run first);
* ``lora``    seconds per LoRA optimiser step (default TrainConfig: r=16, all-linear) at batch
              8 x 256 tokens, fp32 (``--lora-steps`` steps) and bf16 (1 step; slow on a CPU
              without native bf16, skip with ``--no-bf16-train``);
* ``scorer``  per-row response losses over the first ``--rows`` rows of noisy-mix-v1's pool
              (synthetic rows when ../shared is absent), fp32, in one run of ``--rounds``
              interleaved rounds (best and median per method):
              - batched: ``token_logprobs`` with length-sorted batches (the library path);
              - naive: one row at a time, full logits, ``model(ids).logits`` then log-softmax;
              - bound: the same tokens (and the same number of target tokens) cut into rows of
                equal length (the rows' mean), batched at the same batch size: no padding at
                all, so no batching scheme of these tokens can do better;
              tokens/s of each, and ratios batched/bound and batched/naive.

    HF_HUB_OFFLINE=1 PYTHONPATH=src .venv/bin/python bench/bench_models.py [--sections ...]
        [--repeats 3] [--rows 128] [--rounds 2] [--batch-size 16] [--threads N] [--json out.json]

Timings on a shared machine are noisy: the load average at start and end is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
POOL = Path(__file__).resolve().parents[1].parent / "shared" / "bench" / "noisy-mix-v1" / "pool.jsonl"


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


def bench_load(args, out: dict) -> None:
    from shedkit.models import load_model

    with tempfile.TemporaryDirectory() as cache:
        t = time.perf_counter()
        load_model("smollm2-135m", cache_dir=cache)
        first = time.perf_counter() - t
        cached = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            load_model("smollm2-135m", cache_dir=cache)
            cached.append(time.perf_counter() - t)
    out["load"] = {"first_gguf_s": first, "cached_s": cached, "cached_median_s": statistics.median(cached)}
    print(f"load: first (GGUF -> safetensors) {first:.1f} s; cached {statistics.median(cached):.2f} s median of {len(cached)} ({', '.join(f'{c:.2f}' for c in cached)})")


def bench_forward(args, model, out: dict) -> None:
    import torch

    from shedkit.models import autocast

    x = torch.randint(0, model.config.vocab_size, (args.forward_batch, 256), generator=torch.Generator().manual_seed(0))
    res = {}
    for precision in ("fp32", "bf16"):
        times = []
        for i in range(args.repeats + 1):
            with torch.inference_mode(), autocast(precision, "cpu"):
                t = time.perf_counter()
                model(input_ids=x, use_cache=False)
                if i:  # run 0 is a warm-up
                    times.append(time.perf_counter() - t)
        res[precision] = {"tokens_per_s": x.numel() / statistics.median(times), "runs_s": times}
        print(f"forward {precision}: {res[precision]['tokens_per_s']:.0f} tokens/s (batch {args.forward_batch} x 256, median of {len(times)})")
    res["bf16_over_fp32"] = res["bf16"]["tokens_per_s"] / res["fp32"]["tokens_per_s"]
    out["forward"] = res


def _rows_of_tokens(tok, n_rows: int, n_tokens: int):
    """Records whose ChatML encoding is ~n_tokens long, about half of it response."""
    from shedkit.data.records import Turn, make_record
    from shedkit.models.encode import encode_record

    words = ("the quick brown fox jumps over the lazy dog while seven wizards quietly judge "
             "boxing matches in a small town near the river ").split()
    rows = []
    for i in range(n_rows):
        q, a = [], []
        while True:
            q.append(words[(i + len(q)) % len(words)])
            a.append(words[(3 * i + len(a)) % len(words)])
            rec = make_record(i, [Turn("user", " ".join(q)), Turn("assistant", " ".join(a))], {})
            if len(encode_record(tok, rec, 10_000)) >= n_tokens:
                break
        rows.append(rec)
    return rows


def bench_lora(args, model, tok, out: dict) -> None:
    from shedkit.models import TrainConfig
    from shedkit.models.finetune import finetuned
    from shedkit.models.encode import encode_record

    rows = _rows_of_tokens(tok, 8, 256)
    lengths = [len(encode_record(tok, r, 256)) for r in rows]
    res = {"lengths": lengths}
    plan = [("fp32", args.lora_steps)] + ([] if args.no_bf16_train else [("bf16", 1)])
    for precision, steps in plan:
        cfg = TrainConfig(epochs=steps, batch_size=8, max_length=256, precision=precision)
        with finetuned(model, tok, rows, cfg, seed=0) as ft:
            s = ft.stats
        res[precision] = {"seconds_per_step": s.seconds / s.steps, "steps": s.steps, "trainable_params": s.trainable_params}
        print(f"LoRA step {precision}: {s.seconds / s.steps:.2f} s/step (batch 8 x {max(lengths)} tokens, "
              f"{s.trainable_params / 1e6:.2f}M trainable, {s.steps} steps incl. adapter attach)")
    out["lora"] = res


def _scorer_rows(tok, n: int):
    if POOL.exists():
        from shedkit.data import load_pool

        return load_pool(POOL, skip_empty=True).records[:n], str(POOL)
    return _rows_of_tokens(tok, n, 64 + n), "synthetic"


def _naive(model, seqs):
    import torch

    out = []
    with torch.inference_mode():
        for s in seqs:
            ids = torch.as_tensor(s.ids[None, :-1])
            logp = torch.log_softmax(model(input_ids=ids, use_cache=False).logits[0].float(), -1)
            where = torch.as_tensor((s.groups[1:] > 0).nonzero()[0])
            out.append(logp[where, torch.as_tensor(s.ids[1:])[where]].double().numpy())
    return out


def _equal_length(seqs):
    """The same tokens and the same number of targets, cut into rows of one length."""
    import numpy as np

    from shedkit.models.encode import Encoded

    ids = np.concatenate([s.ids for s in seqs])
    groups = np.concatenate([(s.groups > 0).astype(np.int16) for s in seqs])
    width = int(round(len(ids) / len(seqs)))
    rows = []
    for i in range(0, len(ids) - width + 1, width):
        g = groups[i : i + width].copy()
        g[0] = 0
        rows.append(Encoded(ids[i : i + width], g))
    return rows


def bench_scorer(args, model, tok, out: dict) -> None:
    import numpy as np

    from shedkit.models.encode import encode_record
    from shedkit.models.scoring import pad_id_of, token_logprobs

    records, source = _scorer_rows(tok, args.rows)
    seqs = [encode_record(tok, r, 512) for r in records]
    n_tokens = sum(len(s) - 1 for s in seqs)  # tokens fed to the model
    bound_rows = _equal_length(seqs)
    bound_tokens = sum(len(s) - 1 for s in bound_rows)
    kw = dict(pad_id=pad_id_of(tok), batch_size=args.batch_size, max_batch_tokens=args.batch_size * 512, precision="fp32")
    token_logprobs(model, seqs[:4], **kw)  # warm-up

    methods = {
        "batched": (lambda: token_logprobs(model, seqs, **kw), n_tokens),
        "bound": (lambda: token_logprobs(model, bound_rows, **kw), bound_tokens),
        "naive": (lambda: _naive(model, seqs), n_tokens),
    }
    speeds: dict[str, list[float]] = {k: [] for k in methods}
    results = {}
    for _ in range(args.rounds):  # interleaved, so a burst of load on the machine hits all three
        for name, (fn, tokens) in methods.items():
            t = time.perf_counter()
            results[name] = fn()
            speeds[name].append(tokens / (time.perf_counter() - t))
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(results["batched"], results["naive"]) if len(a))
    lengths = [len(s) for s in seqs]
    from shedkit.models.scoring import length_sorted_batches

    batches = length_sorted_batches([len(s) - 1 for s in seqs], kw["batch_size"], kw["max_batch_tokens"])
    padded = sum(len(b) * (len(seqs[b[0]]) - 1) for b in batches)
    res = {
        "source": source, "rows": len(seqs), "tokens": n_tokens, "batch_size": args.batch_size, "rounds": args.rounds,
        "length_min_median_max": [min(lengths), int(statistics.median(lengths)), max(lengths)],
        "batches": len(batches), "padded_over_real_tokens": padded / n_tokens,
        "tokens_per_s": speeds,
        "max_abs_logprob_diff_batched_vs_naive": diff,
    }
    for stat, f in (("best", max), ("median", statistics.median)):
        b, bd, nv = f(speeds["batched"]), f(speeds["bound"]), f(speeds["naive"])
        res[f"batched_over_bound_{stat}"] = b / bd
        res[f"batched_over_naive_{stat}"] = b / nv
    out["scorer"] = res
    print(f"scorer ({len(seqs)} rows of {source}, {n_tokens} tokens, lengths {res['length_min_median_max']}, "
          f"batch {args.batch_size} -> {len(batches)} batches, padded/real tokens {padded / n_tokens:.3f}, fp32, {args.rounds} rounds):")
    for name, v in speeds.items():
        print(f"  {name:8s} tokens/s best {max(v):.0f}, median {statistics.median(v):.0f}  ({', '.join(f'{x:.0f}' for x in v)})")
    print(f"  batched / bound = {res['batched_over_bound_best']:.2f} (best) {res['batched_over_bound_median']:.2f} (median); "
          f"batched / naive = {res['batched_over_naive_best']:.2f} (best) {res['batched_over_naive_median']:.2f} (median); "
          f"max |logprob diff| batched vs naive = {diff:.1e}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sections", default="load,forward,lora,scorer")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rows", type=int, default=128)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--forward-batch", type=int, default=4)
    p.add_argument("--lora-steps", type=int, default=3)
    p.add_argument("--no-bf16-train", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]

    t = time.perf_counter()
    import torch
    import transformers  # noqa: F401

    if args.threads:
        torch.set_num_threads(args.threads)
    from shedkit.models.device import cpu_has_fast_bf16

    out = {"argv": sys.argv, "threads": torch.get_num_threads(), "cpu_fast_bf16": cpu_has_fast_bf16(),
           "torch": torch.__version__, "loadavg_start": loadavg(), "import_s": time.perf_counter() - t}
    print(f"torch {torch.__version__}, {out['threads']} threads, native bf16: {out['cpu_fast_bf16']}, "
          f"import torch+transformers {out['import_s']:.1f} s, load average {out['loadavg_start']}")
    if "load" in sections:
        bench_load(args, out)
    if {"forward", "lora", "scorer"} & set(sections):
        from shedkit.models import load_model

        model, tok = load_model("smollm2-135m")
        if "forward" in sections:
            bench_forward(args, model, out)
        if "lora" in sections:
            bench_lora(args, model, tok, out)
        if "scorer" in sections:
            bench_scorer(args, model, tok, out)
    out["loadavg_end"] = loadavg()
    print(f"load average at the end: {out['loadavg_end']}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
