"""Workers refuse mis-keyed jobs; the process pool caps threads; Ray gets GPUs and clear errors."""

import os
import pickle
import sys

import pytest

from shedkit.errors import ShedkitError
from shedkit.execute import Job, ProcessPoolBackend, RayBackend, ScoreJobRunner, WorkerMismatchError
from shedkit.execute.backends import RayConnectionError, usable_cores


@pytest.fixture(scope="module")
def rows():
    from shedkit.data.records import Turn, make_record

    return [make_record(i, [Turn("user", f"Question {i}?"), Turn("assistant", f"Answer {i} " * (i % 3 + 1))], {"i": i})
            for i in range(8)]


def torch_threads(_):
    import torch

    return torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")


def test_process_pool_caps_workers_times_threads_to_the_cores():
    cores = usable_cores()
    for workers in sorted({1, 2, max(1, cores // 2)}):
        with ProcessPoolBackend(workers=workers) as pool:
            threads = {t for _, t in pool.run(torch_threads, list(range(workers)))}
        (n, env), = threads  # every worker alike
        assert n == int(env) == max(1, cores // workers)
        assert workers * n <= max(cores, workers)
    with ProcessPoolBackend(workers=1, threads_per_worker=1) as pool:
        assert [t for _, t in pool.run(torch_threads, [0])] == [(1, "1")]


class PinnedScore:
    """A score function pinned (in the driver) to a runtime, running elsewhere in the worker."""

    settings_hash = "h"

    def __init__(self, pinned, actual):
        self.runtime, self._actual = pinned, actual

    def actual_runtime(self):
        return self._actual

    def __call__(self, ids):
        return 1.0


def test_worker_refuses_a_job_keyed_for_another_device():
    gpu, cpu = {"device": "cuda", "precision": "bf16"}, {"device": "cpu", "precision": "fp32"}
    runner = pickle.loads(pickle.dumps(ScoreJobRunner(PinnedScore(gpu, cpu))))
    with pytest.raises(WorkerMismatchError, match="--gpus-per-job 1"):
        runner(Job.of(["a"], "h"))  # the runner carries the driver's pinned runtime
    with pytest.raises(WorkerMismatchError, match="device=cuda precision=bf16"):
        ScoreJobRunner(PinnedScore(cpu, cpu))(Job.of(["a"], "h", **gpu))  # the job carries its own
    assert ScoreJobRunner(PinnedScore(gpu, gpu))(Job.of(["a"], "h", **gpu)).value == 1.0


def test_job_carries_device_and_precision_through_json():
    job = Job.of(["b", "a"], "h", device="cuda", precision="bf16")
    assert Job.from_dict(job.to_dict()) == job and job.runtime == {"device": "cuda", "precision": "bf16"}
    assert job.key == Job.of(["a", "b"], "h").key  # the settings hash already covers the runtime


def test_subset_score_hash_is_a_property_so_the_guard_fires(rows):
    from shedkit.models import TrainConfig
    from shedkit.value import ScoreFunction
    from shedkit.models.value_fn import SubsetScore

    score = SubsetScore("tiny-random", rows[:3], rows[6:], TrainConfig(precision="fp32", epochs=1), "loss",
                        seed=0, device="cpu")
    assert isinstance(score, ScoreFunction) and isinstance(score.settings_hash, str)
    assert score.runtime == {"device": "cpu", "precision": "fp32"} == score.actual_runtime()
    with pytest.raises(WorkerMismatchError, match="configured differently"):
        ScoreJobRunner(score)(Job.of([rows[0].id], "another-hash"))
    # a worker that would run elsewhere (here: MPS/CUDA pinned, absent) refuses before computing
    pinned = pickle.loads(pickle.dumps(score))
    pinned.device = "cuda"
    with pytest.raises(WorkerMismatchError, match="no GPU"):
        ScoreJobRunner(pinned)(Job.of([rows[0].id], pinned.settings_hash))


def test_subset_score_pins_the_resolved_precision(rows, monkeypatch):
    from shedkit.models import TrainConfig
    from shedkit.models import device as device_mod
    from shedkit.models.value_fn import SubsetScore

    monkeypatch.setattr(device_mod, "cpu_has_fast_bf16", lambda: True)
    bf16 = SubsetScore("tiny-random", rows[:3], rows[6:], TrainConfig(), "loss", device="cpu")
    monkeypatch.setattr(device_mod, "cpu_has_fast_bf16", lambda: False)
    fp32 = SubsetScore("tiny-random", rows[:3], rows[6:], TrainConfig(), "loss", device="cpu")
    assert bf16.train_config.precision == bf16.objective.score.precision == "bf16"
    assert fp32.train_config.precision == "fp32" and bf16.settings_hash != fp32.settings_hash
    # pickled to a worker, it keeps the driver's resolution (no "auto" left to re-resolve)
    assert pickle.loads(pickle.dumps(bf16)).settings_hash == bf16.settings_hash


def test_one_device_rule_for_models_and_embeddings(monkeypatch):
    import torch

    from shedkit.embed.base import resolve_device as embed_device
    from shedkit.models import device as device_mod

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_mod, "mps_available", lambda: True)
    assert device_mod.resolve_device(None).type == "mps" == device_mod.resolve_device("auto").type
    assert embed_device(None) == "mps"
    monkeypatch.setattr(device_mod, "mps_available", lambda: False)
    assert device_mod.resolve_device(None).type == "cpu" and embed_device("auto") == "cpu"
    with pytest.raises(ShedkitError, match="no CUDA GPU"):
        device_mod.resolve_device("cuda")
    assert device_mod.pin_device("cuda") == "cuda"  # a driver may pin jobs to a device it lacks


def test_gpus_per_job_reaches_ray(monkeypatch):
    calls = {}

    class FakeRemote:
        def options(self, **kw):
            calls.update(kw)
            return self

    class FakeRay:
        def is_initialized(self):
            return True

        def remote(self, fn):
            return FakeRemote()

    monkeypatch.setitem(sys.modules, "ray", FakeRay())
    RayBackend(gpus_per_job=1)._init()
    assert calls["num_gpus"] == 1


def test_shed_passes_gpus_per_job_and_defaults_to_one_gpu_on_cuda():
    from shedkit.pipeline.methods.base import MethodContext
    from shedkit.pipeline.backends import backend_options_for

    def ctx(**options):
        return MethodContext(records=[], budget=1, seed=0, options=options, run_dir=None, cache_dir=None, method="shed-qocs")

    assert backend_options_for(ctx(gpus_per_job=2), "ray", {"device": "cpu"})["gpus_per_job"] == 2.0
    assert backend_options_for(ctx(), "ray", {"device": "cuda"})["gpus_per_job"] == 1.0
    assert "gpus_per_job" not in backend_options_for(ctx(), "ray", {"device": "cpu"})
    with pytest.raises(ShedkitError, match="Ray setting"):
        backend_options_for(ctx(gpus_per_job=1), "process", {"device": "cpu"})


def test_ray_connection_failure_is_one_clear_message(monkeypatch):
    class AuthenticationError(Exception):
        pass

    class FakeRay:
        def is_initialized(self):
            return False

        def init(self, **kw):
            raise AuthenticationError("Token authentication is enabled but no authentication token was found")

    monkeypatch.setitem(sys.modules, "ray", FakeRay())
    with pytest.raises(RayConnectionError, match="RAY_AUTH_TOKEN") as info:
        RayBackend(address="127.0.0.1:6379")._init()
    assert isinstance(info.value, ShedkitError) and info.value.exit_code == 2
    assert "127.0.0.1:6379" in str(info.value) and "\n" not in str(info.value)


def test_cli_ray_failure_exits_2_without_traceback(monkeypatch, tmp_path, capsys):
    from shedkit.cli.main import main

    class FakeRay:
        def is_initialized(self):
            return False

        def init(self, **kw):
            raise ConnectionError("Failed to connect to GCS at address 127.0.0.1:1")

    monkeypatch.setitem(sys.modules, "ray", FakeRay())
    pool, dev = _tiny_pool(tmp_path)
    code = main(["select", str(pool), "--method", "shed-qocs", "--budget", "4", "--out", str(tmp_path / "out"),
                 "--target", str(dev), "--model", "tiny-random", "--embedder", "hashed-ngrams", "--clusters", "3",
                 "--backend", "ray", "--ray-address", "127.0.0.1:1", "--precision", "fp32", "--permutations", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot connect to the Ray cluster at 127.0.0.1:1" in err and "Traceback" not in err


def _tiny_pool(tmp_path):
    import json

    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"instruction": f"Say {w} {i}.", "input": "", "output": f"{w} {i}!"}) + "\n"
                            for i, w in enumerate(["hi", "yes", "no", "cat", "dog", "sun", "sea", "sky", "red", "tea"])))
    dev = tmp_path / "dev.jsonl"
    dev.write_text("".join(json.dumps({"instruction": f"Say {w}.", "input": "", "output": f"{w}!"}) + "\n"
                           for w in ["hi", "sea"]))
    return pool, dev
