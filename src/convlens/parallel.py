"""A Dask client for any convlens analysis that fans work out: a local cluster by default, or an
existing scheduler to scale out.

>>> from convlens.parallel import get_client
>>> with get_client(workers=2) as client:                      # doctest: +SKIP
...     futures = client.map(work, shards)
...     results = client.gather(futures)

Local workers are separate processes with one thread each (torch releases the GIL, but one
thread per process keeps 2-core machines from oversubscribing); they inherit the environment,
so ``PYTHONPATH`` and the installed ``convlens`` are importable there. Tasks should be
module-level functions (pickled by reference) that take plain objects and write their own
output, so the same code runs on a local cluster and on a remote one with a shared filesystem.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

# Local workers run long CPU-bound tasks (PyTorch training). Two Dask defaults cost them dearly:
# - the nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which also switches off glibc's
#   dynamic mmap threshold, so every activation buffer above 128 KiB is mmap'ed, page-faulted and
#   zeroed again at every step: a bare M(64,0,64) training step took 221 ms of CPU with it, 122 ms
#   without (batch 128, one thread). Workers get the other variables of that list, not this one.
# - the statistical profiler (a stack sample every 10 ms) and the 100 ms memory / 500 ms system
#   monitors: a study step measured 2.0x a bare step with them, 1.4x without.
LOCAL_WORKER_CONFIG = {
    "distributed.nanny.pre-spawn-environ": {"OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1, "OPENBLAS_NUM_THREADS": 1},
    "distributed.worker.profile.enabled": False,
    "distributed.worker.memory.monitor-interval": "2s",
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.admin.tick.interval": "1s",  # event-loop health check, 20 ms by default
}


def _check_workers(workers: int | None) -> int:
    if workers is None:
        return max(1, os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int):
        raise TypeError(f"workers must be a positive integer, got {workers!r}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    return workers


@contextmanager
def get_client(workers: int | None = None, scheduler: str | None = None, *,
               threads_per_worker: int = 1, memory_limit: str | int = "auto") -> Iterator:
    """A ``distributed.Client``: to ``scheduler`` when given (an address such as
    ``tcp://10.0.0.5:8786``), else to a new ``LocalCluster`` of ``workers`` processes (default:
    one per CPU). The client, and a cluster started here, are closed on exit, even on error.

    Parameters
    ----------
    workers : number of local worker processes (ignored with ``scheduler``)
    scheduler : address of a running Dask scheduler
    threads_per_worker : threads in each local worker
    memory_limit : per-worker memory limit of a local cluster (Dask's syntax)
    """
    from distributed import Client, LocalCluster

    if scheduler is not None:
        if not isinstance(scheduler, str) or not scheduler.strip():
            raise ValueError(f"scheduler must be an address like tcp://host:8786, got {scheduler!r}")
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as e:
            raise ValueError(f"cannot reach the Dask scheduler at {scheduler}: {e}. Start one with "
                             "`dask scheduler` or leave --scheduler out for a local cluster") from e
        try:
            yield client
        finally:
            client.close()
        return
    import dask

    n = _check_workers(workers)
    with warnings.catch_warnings(), dask.config.set(LOCAL_WORKER_CONFIG):
        # the scheduler's small HTTP server (health checks) moves off a busy port 8787 by itself
        warnings.filterwarnings("ignore", message="Port 8787 is already in use", category=UserWarning)
        # Dask's INFO logs (scheduler and every worker process) only when the caller's logging
        # asks for them (the CLI's --verbose): the workers take the level from this config
        level = max(logging.getLogger("distributed").getEffectiveLevel(), logging.INFO)
        import dask

        with dask.config.set({"logging.distributed": logging.getLevelName(level).lower()}):
            cluster = LocalCluster(n_workers=n, threads_per_worker=threads_per_worker, processes=True,
                                   dashboard_address=None, memory_limit=memory_limit, silence_logs=level)
    try:
        client = Client(cluster)
        try:
            log.info("local Dask cluster: %d workers", n)
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def worker_count(client) -> int:
    """How many workers the client's scheduler has now."""
    return len(client.scheduler_info().get("workers", {})) or 1


__all__ = ["get_client", "worker_count"]
