"""Execution backends: run independent jobs, in-process, in a local process pool, or on Ray.

Every backend has the same small contract (datatrove's executors are the model):

    backend.run(fn, items)  ->  iterator of (index, fn(items[index])), in completion order

``fn`` and the items must be picklable for the process and Ray backends. Yielding results as
they finish lets the caller store each one at once (the value cache does), so a run stopped
mid-batch loses at most the jobs still in flight. Results never depend on completion order:
callers index them, and estimators fold them in a fixed order.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator, Sequence

from shedkit.errors import ShedkitError, require
from shedkit.util.registry import unknown_name


class Backend:
    """Runs independent jobs. Use as a context manager, or call ``close()`` when done."""

    name = "base"

    @property
    def parallelism(self) -> int:
        """How many jobs run at once; estimators use it as their default batch size."""
        return 1

    def run(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        raise NotImplementedError

    def close(self) -> None:
        """Release workers (a no-op for the sequential backend)."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(parallelism={self.parallelism})"


class SequentialBackend(Backend):
    """Runs jobs one after the other in this process (the default; no pickling needed)."""

    name = "sequential"

    def __init__(self, workers: int | None = None):
        del workers  # accepted so that a config naming workers works with any backend

    def run(self, fn, items):
        for i, item in enumerate(items):
            yield i, fn(item)


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS says, else the count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - macOS / Windows
        return os.cpu_count() or 1


def _limit_threads(threads: int) -> None:
    """Process-pool initializer: cap BLAS/OpenMP and torch threads in this worker."""
    import sys

    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    if "torch" in sys.modules:  # already imported (spawn re-imports the main module): set it directly
        sys.modules["torch"].set_num_threads(threads)
    # otherwise torch reads OMP_NUM_THREADS when a job first imports it


class ProcessPoolBackend(Backend):
    """A local pool of ``workers`` processes started with the *spawn* method.

    Spawn (not fork) so that workers start clean: no copied locks, no half-initialised CUDA or
    thread pools from the parent. The pool is created on first use and reused until ``close()``.

    Each worker gets ``threads_per_worker`` torch/OpenMP threads, by default the cores divided
    among the workers (at least 1), so that workers x threads never exceeds the cores: torch
    alone would start one thread per core in every worker and oversubscribe the CPU.
    """

    name = "process"

    def __init__(self, workers: int | None = None, threads_per_worker: int | None = None):
        if workers is not None and workers < 1:
            raise ShedkitError(f"--workers must be at least 1, got {workers}")
        if threads_per_worker is not None and threads_per_worker < 1:
            raise ShedkitError(f"threads per worker must be at least 1, got {threads_per_worker}")
        cores = usable_cores()
        self.workers = workers or cores
        self.threads_per_worker = threads_per_worker or max(1, cores // self.workers)
        self._pool = None

    @property
    def parallelism(self) -> int:
        return self.workers

    def _executor(self):
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_limit_threads, initargs=(self.threads_per_worker,),
            )
        return self._pool

    def run(self, fn, items):
        from concurrent.futures import FIRST_COMPLETED, wait

        if not items:
            return
        pool = self._executor()
        index = {pool.submit(fn, item): i for i, item in enumerate(items)}
        pending = set(index)
        error: BaseException | None = None
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=index.__getitem__):
                    if future.cancelled():
                        continue
                    if future.exception() is not None:
                        if error is None:  # drop queued work; what already runs finishes below
                            error = future.exception()
                            for queued in pending:
                                queued.cancel()
                        continue
                    yield index[future], future.result()
            if error is not None:
                # A job failed: the jobs that were running when it did still ran to the end (the pool
                # cannot stop them), and were yielded above so the caller keeps them.
                raise error
        finally:
            for future in pending:  # an abandoned iterator: drop queued work
                future.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class RayConnectionError(ShedkitError):
    """Ray could not start or join a cluster: one message with what to do about it."""

    def __init__(self, address: str | None, exc: BaseException):
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        text = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip()
        if "auth" in f"{type(exc).__name__} {exc}".lower() or "token" in str(exc).lower():
            fix = ("the cluster uses Ray's token authentication: give this machine the cluster's token, "
                   "`export RAY_AUTH_TOKEN=<token>` (print it on the head node with `ray get-auth-token`) "
                   "or RAY_AUTH_TOKEN_PATH=<file>, and RAY_AUTH_MODE=token; or start the cluster with "
                   "RAY_AUTH_MODE=disabled")
        elif address:
            fix = ("check that the head node runs (`ray status --address ADDRESS` on it) and that the address "
                   "is the one `ray start --head` printed (host:port of the GCS, e.g. 127.0.0.1:6379, "
                   "or ray://host:10001 for Ray Client); the Ray versions of both ends must match")
        else:
            fix = "see the Ray log under /tmp/ray/session_latest/logs, or use --backend process"
        super().__init__(f"cannot connect to {where} ({text[:300]}); {fix}")


def _ray_call(fn, item):
    return fn(item)


class RayBackend(Backend):
    """Runs jobs as Ray tasks: a local Ray instance by default, or an existing cluster.

    address        -- ``None`` starts Ray on this machine (``ray.init()``); ``"auto"`` or
                      ``"ray://host:10001"`` joins a running cluster. The score function must be
                      importable there (install shedkit on the cluster, or pass ``runtime_env``).
    workers        -- CPUs for a local instance (default: all); ignored for a cluster.
    cpus_per_job, gpus_per_job -- resources Ray reserves for each job (a fine-tune wants a GPU).
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        workers: int | None = None,
        cpus_per_job: float = 1,
        gpus_per_job: float = 0,
        runtime_env: dict | None = None,
    ):
        self.address, self.workers = address, workers
        self.cpus_per_job, self.gpus_per_job = cpus_per_job, gpus_per_job
        self.runtime_env = runtime_env
        self._ray = None
        self._started_here = False
        self._task = None

    def _init(self):
        if self._ray is None:
            ray = require("ray", "ray", "the Ray execution backend")
            if not ray.is_initialized():
                kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
                if self.address is None:
                    kwargs["num_cpus"] = self.workers
                else:
                    kwargs["address"] = self.address
                if self.runtime_env:
                    kwargs["runtime_env"] = self.runtime_env
                try:
                    ray.init(**kwargs)
                except Exception as exc:  # noqa: BLE001 - Ray raises many kinds; all mean "cannot connect"
                    raise RayConnectionError(self.address, exc) from None
                self._started_here = True
            self._task = ray.remote(_ray_call).options(
                num_cpus=self.cpus_per_job, num_gpus=self.gpus_per_job, max_retries=0
            )
            self._ray = ray
        return self._ray

    @property
    def parallelism(self) -> int:
        if self.address is None and self.workers:
            return max(1, int(self.workers / max(self.cpus_per_job, 1e-9)))
        ray = self._init()
        resources = ray.cluster_resources()
        slots = resources.get("CPU", 1) / max(self.cpus_per_job, 1e-9)
        if self.gpus_per_job:
            slots = min(slots, resources.get("GPU", 0) / self.gpus_per_job)
        return max(1, int(slots))

    def run(self, fn, items):
        if not items:
            return
        ray = self._init()
        fn_ref = ray.put(fn)
        index = {self._task.remote(fn_ref, item): i for i, item in enumerate(items)}
        pending = list(index)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    yield index[ref], ray.get(ref)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._ray is not None and self._started_here:
            self._ray.shutdown()
        self._ray, self._started_here, self._task = None, False, None


BACKENDS: dict[str, type[Backend]] = {
    "sequential": SequentialBackend,
    "process": ProcessPoolBackend,
    "ray": RayBackend,
}


def get_backend(backend: "str | Backend | None" = None, **options: Any) -> Backend:
    """A backend by name (``sequential``, ``process``, ``ray``) or an instance passed through.

    ``options`` go to the backend's constructor, e.g. ``workers=4`` or ``address="auto"``;
    options a backend does not take are an error (``address`` means nothing to ``process``).
    """
    if backend is None:
        backend = "sequential"
    if isinstance(backend, Backend):
        return backend
    try:
        cls = BACKENDS[backend]
    except KeyError:
        raise unknown_name("backend", backend, BACKENDS) from None
    options = {k: v for k, v in options.items() if v is not None}
    try:
        return cls(**options)
    except TypeError as exc:
        raise ShedkitError(f"backend '{backend}' does not take these options: {exc}") from None
