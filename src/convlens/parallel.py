"""A Dask client: a local cluster by default, or an existing scheduler to scale out.

Minimal version written for network dissection; the issue-3 engineer owns the full one (same
signature: ``get_client(workers=None, scheduler=None)``, a context manager).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def get_client(workers: int | None = None, scheduler: str | None = None) -> Iterator:
    """A ``distributed.Client`` to ``scheduler`` (``tcp://host:8786``) when given, else to a new
    local cluster of ``workers`` single-thread processes (default: one per CPU); closed on exit."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        client = Client(scheduler, timeout="10s")
        try:
            yield client
        finally:
            client.close()
        return
    n = workers if workers is not None else max(1, os.cpu_count() or 1)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


__all__ = ["get_client"]
