"""Torch threads inside parallel workers: each task gets its share of the cores.

Torch sizes its thread pool from ``OMP_NUM_THREADS`` when it starts, else from the
number of cores. Process-based parallel backends set that variable in their workers
before torch is imported there: joblib's default (loky) backend to
``cpu_count // n_jobs`` or to ``parallel_config(inner_max_num_threads=...)``, dask's
nanny to 1, Ray to a task's CPUs. Torch then already follows them.

A worker that runs several tasks at once in one process without such a variable (a dask
``LocalCluster(processes=False)``, ``dask worker --no-nanny``, a nanny configured
without ``pre-spawn-environ``) would give every concurrent fit all the cores: with
``nthreads`` tasks that is ``nthreads`` times too many threads, and OpenMP thread pools
that fight over cores slow small problems down by an order of magnitude.
:func:`limit_torch_threads_in_workers`, called by ``fit``/``predict``/``score``, lowers
torch's threads to the task's share inside a worker only. A main process is never
touched: there torch's settings are the user's.

Concurrent fits in one process also share torch's global random generator, which seeds
the initial weights: :func:`seeded_global_rng` serialises its seeded use, so that
``random_state`` gives the same fit whether fits run one after another or at once.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from joblib import cpu_count

_GLOBAL_RNG_LOCK = threading.RLock()


def available_cpus() -> int:
    """Cores this process may use (CPU affinity and container quotas respected)."""
    return max(1, int(cpu_count()))


def environment_threads() -> int | None:
    """Threads per parallel region that ``OMP_NUM_THREADS`` asks for, if it is set.

    A nested setting such as ``"4,2"`` gives its outermost level.
    """
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    try:
        threads = int(value)
    except ValueError:
        return None
    return threads if threads >= 1 else None


def dask_worker_threads() -> int | None:
    """Tasks a dask worker runs at once when called from one of its tasks, else None.

    Never imports ``distributed``: a process that has not imported it runs no dask task.
    """
    if "distributed" not in sys.modules:
        return None
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:  # not inside a task of a dask worker
        return None
    return max(1, int(worker.state.nthreads))


def worker_thread_limit() -> int | None:
    """Most torch threads one task should use here, or None outside parallel workers.

    Inside a dask worker's task the cores are shared by the worker's ``nthreads``
    concurrent tasks; inside a child process (a joblib/loky or multiprocessing worker)
    the process runs one task. ``OMP_NUM_THREADS``, when set, caps the share further.

    Returns
    -------
    limit : int or None
        At least 1; None in a main process, where torch is left as the user set it.
    """
    concurrent_tasks = dask_worker_threads()
    if concurrent_tasks is None:
        if multiprocessing.parent_process() is None:
            return None
        concurrent_tasks = 1
    share = max(1, available_cpus() // concurrent_tasks)
    requested = environment_threads()
    return share if requested is None else min(share, requested)


def limit_torch_threads_in_workers() -> int:
    """Inside a parallel worker, lower torch's threads to :func:`worker_thread_limit`.

    Called at the start of ``fit``, ``predict`` and ``score``. Torch's setting applies to
    the calling thread (and to threads started after it), so concurrent tasks of one
    dask worker each limit themselves while a main thread keeps its own setting. It is
    not restored: the worker process, or worker thread, belongs to the parallel backend,
    and the limit is right for its later tasks too. Torch is never given more threads
    than it had, and a main process is left alone.

    Returns
    -------
    threads : int
        Torch's threads in the calling thread after the call.
    """
    limit = worker_thread_limit()
    if limit is not None and torch.get_num_threads() > limit:
        torch.set_num_threads(limit)
    return torch.get_num_threads()


@contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """Torch's global CPU generator seeded with ``seed`` inside the block, restored after.

    Held under a process-wide lock: without it, two fits in threads of one process (a
    dask worker with several threads, joblib's threading backend) interleave their
    seeding and weight initialisation, and a seeded fit is no longer reproducible.
    """
    with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
