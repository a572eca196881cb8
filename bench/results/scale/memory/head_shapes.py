"""Does a bf16 head matmul with a new row count N per call grow resident memory (oneDNN primitive cache)?"""
import random, resource, sys, time
import torch
sys.path.insert(0, "/work/main/src")
from shedkit.models.scoring import padded_width
mode = sys.argv[1]  # distinct | bucketed
torch.set_num_threads(2)
head = torch.nn.Linear(576, 49152, bias=False).to(torch.bfloat16)
rng = random.Random(0)
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
with torch.inference_mode():
    for i in range(1, 301):
        n = rng.randint(100, 700)
        m = padded_width(n) if mode == "bucketed" else n
        x = torch.randn(m, 576).to(torch.bfloat16)
        y = head(x)[:n].float()
        if i % 50 == 0:
            print(mode, i, f"peak {rss():.0f} MB", f"{time.perf_counter() - t:.1f} s", flush=True)
