"""A real Ray cluster: a head node started on 127.0.0.1, joined by address, gives the
sequential backend's SHED values (computed into a separate cache)."""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import shedkit
from shedkit.data.synthetic import write_demo_data

pytest.importorskip("ray", reason="ray is not installed (pip install 'shedkit[ray]')")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}: {proc.stdout.read()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"the Ray head did not open port {port} within {timeout}s")


@pytest.fixture(scope="module")
def ray_head():
    """``ray start --head --block`` in its own process group; stopped (that group only) after."""
    ray_bin = Path(sys.executable).with_name("ray")
    if not ray_bin.exists():
        pytest.skip("the ray command is not installed next to this python")
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="shedkit-ray-", dir="/tmp")  # short: Ray's socket paths are length-limited
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(shedkit.__file__).parents[1]), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", "--port", str(port), "--node-ip-address", "127.0.0.1",
         "--num-cpus", "2", "--num-gpus", "0", "--include-dashboard", "false", "--disable-usage-stats",
         "--temp-dir", temp],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        _wait_for_port(port, proc)
        yield f"127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGINT)  # `ray start --block` stops its node's processes, then exits
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        try:  # whatever of this node is left: its process group, which nothing else shares
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def test_shed_valuation_on_a_ray_cluster_matches_sequential(tmp_path, ray_head, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    paths = write_demo_data(tmp_path / "data", n=30, seed=4)
    dev = paths["target_dev"]
    dev.write_text("".join(dev.read_text().splitlines(keepends=True)[:4]))
    kw = dict(method="shed-qocs", budget=6, seed=0, target=[dev], model="tiny-random", embedder="hashed-ngrams",
              clusters=3, permutations=1, max_length=48, precision="fp32", device="cpu")
    seq = shedkit.select(paths["pool"], out=tmp_path / "seq", cache_dir=tmp_path / "seq-cache", **kw)
    ray = shedkit.select(paths["pool"], out=tmp_path / "ray", cache_dir=tmp_path / "ray-cache",
                         backend="ray", ray_address=ray_head, **kw)
    method = json.loads((tmp_path / "ray" / "manifest.json").read_text())["method"]
    assert method["fine_tunes"]["computed"] == method["estimator"]["n_evaluations"] == 4  # nothing reused
    assert method["value_settings"]["backend"] == "ray"
    values = [json.loads((tmp_path / d / "work" / "valuation.json").read_text())["marginals"] for d in ("seq", "ray")]
    assert values[0] == values[1]
    assert seq.rows == ray.rows
