"""Loss scoring sharded over the process pool, killed with SIGKILL mid-run (driver and workers,
one process group), then resumed in-process: nothing a worker finished is recomputed, the
result is a fresh sequential run's bit for bit, and no temp file is visible to a reader."""

import fnmatch
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from shedkit.execute.shards import SHARD_DELAY_ENV
from shedkit.models import losses as losses_mod
from shedkit.models.losses import LossCache, response_losses

from sharded_loss_helpers import FP32, ROWS_CODE, TINY_ID, assert_same, make_rows, parts

SRC = Path(__file__).resolve().parents[2] / "src"


KILLED_RUN = textwrap.dedent("""
    import sys
    from shedkit.execute import ProcessPoolBackend
    from shedkit.models import ScoreConfig
    from shedkit.models.losses import response_losses
    {rows}
    if __name__ == "__main__":
        with ProcessPoolBackend(workers=2, threads_per_worker=1) as pool:
            response_losses("tiny-random", None, make_rows({n}), ScoreConfig(precision="fp32", max_length=96),
                            cache_dir=sys.argv[1], backend=pool, shard_size={size}, device="cpu", progress=False)
        print("finished")
""")


def kill_midway(code: str, cache_dir: Path, pattern: str, n_shards: int, delay: float = 0.4, timeout: float = 180):
    """Run ``code`` in its own process group; SIGKILL the whole group once at least one shard
    file matching ``pattern`` exists under ``cache_dir`` and not all of them do."""
    env = {**os.environ, SHARD_DELAY_ENV: str(delay), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-c", code, str(cache_dir)], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if list(cache_dir.glob(pattern)):
                break
            time.sleep(0.02)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers: one process group
        except ProcessLookupError:
            pass
        out = proc.communicate()[0]
    assert proc.returncode == -signal.SIGKILL, f"the run was not killed mid-way (rc {proc.returncode}):\n{out[-3000:]}"
    done = sorted(cache_dir.glob(pattern))
    assert 1 <= len(done) < n_shards, f"{len(done)} of {n_shards} shards done when killed"
    return done


def assert_no_visible_temp_files(root: Path, reader_patterns):
    """Every file a reader would pick up is complete; anything else is a hidden temp file or metadata."""
    for path in root.rglob("*"):
        if path.is_dir():
            continue
        if any(fnmatch.fnmatch(path.name, p) for p in reader_patterns):
            assert not path.name.startswith(".") and not path.name.endswith(".tmp")
        else:
            assert path.name.startswith(".") and path.name.endswith(".tmp") or path.name in ("meta.json", "identity.txt"), path


def test_kill_9_mid_run_then_resume_recomputes_nothing_done(tiny, tmp_path, monkeypatch):
    n, size = 60, 5
    cache = tmp_path / "cache"
    code = KILLED_RUN.format(rows=ROWS_CODE, n=n, size=size)
    done = kill_midway(code, cache, "losses/*/part-*.jsonl", n // size)
    assert_no_visible_temp_files(cache, ["part-*.jsonl"])
    done_ids = {json.loads(line)["id"] for p in done for line in p.read_text().splitlines()}
    assert len(done_ids) == size * len(done)  # whole shards, complete lines

    model, tok = tiny
    rows = make_rows(n)
    seen = []
    real = losses_mod._score_rows
    monkeypatch.setattr(losses_mod, "_score_rows", lambda m, t, recs, *a, **k: seen.append([r.id for r in recs]) or real(m, t, recs, *a, **k))
    resumed = response_losses(model, tok, rows, FP32, cache_dir=cache, model_id=TINY_ID, shard_size=size, progress=False)
    recomputed = {i for ids in seen for i in ids}
    assert not recomputed & done_ids and recomputed | done_ids == {r.id for r in rows}  # (b)
    assert resumed.cached == len(done_ids) and resumed.shards == n // size - len(done)
    assert all(len(ids) == size for ids in seen)  # the unfinished shards, rebuilt whole

    monkeypatch.setattr(losses_mod, "_score_rows", real)
    fresh = response_losses(model, tok, rows, FP32, shard_size=size, progress=False)  # sequential, no cache
    assert_same(resumed, fresh)  # (a) bit for bit
    assert_no_visible_temp_files(cache, ["part-*.jsonl"])  # (c)
    key_dir, = {p.parent for p in parts(cache)}
    entries = LossCache(cache, key_dir.name, {}).entries()
    assert set(entries) == {r.id for r in rows}
