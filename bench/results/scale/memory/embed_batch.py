"""MiniLM per-token speed on CPU at batch 16 vs 64 (same 1,024 pool rows, sorted by length as the run does)."""
import json, sys, time
import torch
sys.path.insert(0, "/work/main/src")
torch.set_num_threads(2)
from shedkit.embed.api import get_embedder
emb = get_embedder("all-MiniLM-L6-v2")
texts = []
for l in open("/work/bench-out/scale3/pools/pool_1000_seed0.jsonl"):
    r = json.loads(l)
    texts.append("\n".join(str(v) for v in r.values() if isinstance(v, str)))
texts = sorted(texts[:768], key=len, reverse=True)
emb.encode(texts[:4], batch_size=4)
for bs in (16, 64, 16, 64, 32):
    t = time.perf_counter(); emb.encode(texts, batch_size=bs); print(bs, round(time.perf_counter() - t, 2), flush=True)
