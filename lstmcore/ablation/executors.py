"""Where trials run: local worker processes or a Dask cluster, behind one small interface.

Workers only compute (``lstmcore.ablation.trial.run_trial``); the coordinator owns the storage. Both executors give
each trial its number of BLAS threads (``threadpoolctl`` in the worker, plus the environment variables for libraries
loaded later), so ``workers x threads <= cores`` and local and Dask runs of the same task compute the same thing.
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import signal
import sys
import threading
import time

from lstmcore.ablation.trial import run_trial

BLAS_ENVIRONMENT = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


class WorkerLost(RuntimeError):
    """The process running a trial died (crash, out of memory, killed worker) before returning a result."""


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _exit_with_parent(parent_pid: int) -> None:
    """End this worker when its coordinator dies, however it dies (SIGKILL included): on Linux the kernel sends us
    SIGKILL when the parent exits (``prctl(PR_SET_PDEATHSIG)``); everywhere a watchdog thread checks every second
    that the parent is still ours (an orphan is re-parented, so ``getppid`` changes)."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no prctl (an unusual libc): the watchdog still works
            pass
    if os.getppid() != parent_pid:  # the coordinator died before we got here
        os._exit(1)

    def watch():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="lstmcore-parent-watchdog", daemon=True).start()


def _init_worker(blas_threads: int, parent_pid: int | None = None) -> None:
    if parent_pid is not None:
        _exit_with_parent(parent_pid)
    # The coordinator decides what an interrupt means (it records the running trials as interrupted and stops us).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # For the BLAS libraries this process loads from now on; run_trial also limits the loaded ones for each trial.
    for name in BLAS_ENVIRONMENT:
        os.environ[name] = str(blas_threads)


def _count(value, option: str, default: int) -> int:
    """A worker or thread count from the command line or the API (``None``: ``default``)."""
    from lstmcore._validation import positive_int
    from lstmcore.ablation.config import ConfigError

    if value is None:
        return default
    try:
        return positive_int(value, option)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


class LocalExecutor:
    """``jobs`` worker processes (``spawn`` context: no inherited locks or BLAS thread pools)."""

    def __init__(self, jobs: int | None = None, blas_threads: int | None = None):
        cores = available_cores()
        self.capacity = _count(jobs, "--jobs", cores)
        self.blas_threads = _count(blas_threads, "--threads", max(1, cores // self.capacity))
        self._pool = None
        self.description = f"{self.capacity} local worker process{'es' if self.capacity > 1 else ''} " \
                           f"x {self.blas_threads} BLAS thread{'s' if self.blas_threads > 1 else ''}"

    def _ensure_pool(self):
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.capacity, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker, initargs=(self.blas_threads, os.getpid()))
        return self._pool

    def submit(self, task: dict):
        return self._ensure_pool().submit(run_trial, task)

    def wait(self, handles, timeout: float):
        done, _ = concurrent.futures.wait(handles, timeout=timeout, return_when=concurrent.futures.FIRST_COMPLETED)
        return list(done)

    def result(self, handle) -> dict:
        try:
            return handle.result()
        except concurrent.futures.process.BrokenProcessPool as exc:
            self._discard_pool()  # the next submit starts fresh workers
            raise WorkerLost(f"a worker process died: {exc}") from None

    def _discard_pool(self):
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self, cancel: bool = False) -> None:
        if self._pool is None:
            return
        if cancel:
            for process in list(getattr(self._pool, "_processes", {}).values()):
                process.terminate()  # stop the trials in progress now; they are recorded as interrupted
        self._pool.shutdown(wait=True, cancel_futures=cancel)
        self._pool = None


class DaskExecutor:
    """Trials as tasks on a ``dask.distributed`` cluster; capacity = the cluster's worker threads.

    Workers need lstmcore (and any plugin whose variants the study uses) installed. Their BLAS threads are set per
    trial (``threads``, default 1); start workers with ``--nthreads 1`` per core for the same effect as ``--jobs``.
    """

    def __init__(self, address, blas_threads: int | None = None, connect_timeout: float = 10.0):
        from distributed import Client

        from lstmcore.ablation.config import ConfigError

        self.blas_threads = _count(blas_threads, "--threads", 1)
        if isinstance(address, Client):
            self.client = address
        else:
            try:
                self.client = Client(address, timeout=connect_timeout)
            except (OSError, TimeoutError, ValueError, TypeError) as exc:
                raise ConfigError(f"--dask {address}: cannot reach the Dask scheduler: "
                                  f"{' '.join(str(exc).split())[:300]}") from None
        self._owns_client = not isinstance(address, Client)
        self.capacity = max(1, sum(self.client.nthreads().values()))
        self._submitted = set()
        self.description = f"Dask cluster {self.client.scheduler.address} ({self.capacity} worker threads) " \
                           f"x {self.blas_threads} BLAS thread{'s' if self.blas_threads > 1 else ''}"

    def submit(self, task: dict):
        import uuid

        future = self.client.submit(run_trial, task, key=f"lstmcore-trial-{task['key']}-{uuid.uuid4().hex[:8]}",
                                    pure=False, retries=0)
        self._submitted.add(future)
        return future

    def wait(self, handles, timeout: float):
        from distributed import wait

        try:
            done, _ = wait(handles, timeout=timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:
            return []
        return list(done)

    def result(self, handle) -> dict:
        from distributed import KilledWorker

        self._submitted.discard(handle)
        try:
            return handle.result()
        except KilledWorker as exc:
            raise WorkerLost(f"the Dask worker running the trial died: {exc}") from None

    def close(self, cancel: bool = False) -> None:
        if cancel and self._submitted:
            self.client.cancel(list(self._submitted))
        self._submitted.clear()
        if self._owns_client and self.client.status != "closed":
            self.client.close()
