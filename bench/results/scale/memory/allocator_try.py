"""Peak RSS and wall of lowest-loss on a pool under different allocator settings (one run each, cold cache)."""
import json, os, resource, shutil, subprocess, sys, time
pool, label = sys.argv[1], sys.argv[2]
env = dict(os.environ)
for kv in sys.argv[3:]:
    k, v = kv.split("=", 1); env[k] = v
out = f"/work/bench-out/memexp2/{label}"
shutil.rmtree(out, ignore_errors=True)
os.makedirs(out + "/cache"); os.symlink(os.path.expanduser("~/.cache/shedkit/models"), out + "/cache/models")
t = time.perf_counter()
subprocess.run([f"{sys.prefix}/bin/shedkit", "select", pool, "--method", "lowest-loss", "--budget", "0.1", "--seed", "0",
                "--skip-empty", "--no-progress", "--out", out + "/run", "--cache-dir", out + "/cache"], env=env, check=True,
               stdout=subprocess.DEVNULL, stderr=open(out + "/log", "w"))
wall = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
m = json.load(open(out + "/run/manifest.json"))
print(json.dumps({"label": label, "env": sys.argv[3:], "wall_s": round(wall, 1), "peak_rss_mb": round(peak, 1),
                  "base_losses_s": m["method_timings"]["base_losses"], "load1": os.getloadavg()[0]}))
