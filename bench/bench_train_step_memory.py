"""Peak resident memory of one LoRA training step (SmolLM2-135M, all layers, the 8 longest of the
first 600 noisy-mix-v1 rows at max_length 256, bf16) after a warm step of the same shape, with
the head+loss chunked (scoring.TRAIN_HEAD_CHUNK = CHUNK) or not (CHUNK = 1000000).

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python bench/bench_train_step_memory.py CHUNK
"""
import json, sys, time
import torch
torch.set_num_threads(1)
from pathlib import Path
from shedkit.data.pool import load_pool
from shedkit.models import scoring
from shedkit.models.config import TrainConfig
from shedkit.models.finetune import finetuned
from shedkit.models.loading import shared_model
from shedkit.util.memory import peak_rss_mb, resident_mb, release_memory

chunk = int(sys.argv[1])
scoring.TRAIN_HEAD_CHUNK = chunk
recs = load_pool(Path(__file__).resolve().parents[1] / ".." / "shared" / "bench" / "noisy-mix-v1" / "pool.jsonl", skip_empty=True).records
base, tok = shared_model("smollm2-135m")
from shedkit.models.encode import encode_record
lens = [(len(encode_record(tok, r, 256)), i) for i, r in enumerate(recs[:600])]
longest = [recs[i] for _, i in sorted(lens, reverse=True)[:16]]
cfg = TrainConfig(max_length=256, batch_size=8, epochs=1, lr=1e-3, precision="bf16")
with finetuned(base, tok, longest[8:16], cfg, seed=0):  # warm: kernels for this shape exist
    pass
release_memory()
Path("/proc/self/clear_refs").write_text("5")
before = resident_mb()
t0 = time.perf_counter()
with finetuned(base, tok, longest[:8], cfg, seed=1):
    pass
dt = time.perf_counter() - t0
n_targets = sum(encode_record(tok, r, 256).n_targets for r in longest[:8])
print(json.dumps({"chunk": chunk, "rss_before_mb": round(before), "peak_mb": round(peak_rss_mb()), "step_s": round(dt, 1),
                  "targets": n_targets}))
