"""Run independent cells (plain-data dicts) in-process, in local worker processes, or on a
Dask distributed cluster. ``ablate`` and ``analyze`` share it.

A cell function must be a top-level function of plain data so that Dask can ship it; what
it returns must be picklable. Cells reuse finished work on their own (their outputs are
written atomically with the config that made them), so a cluster that loses a worker or a
run that is killed only repeats the unfinished cells.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fmri2img.progress import progress

log = logging.getLogger(__name__)

Cell = dict[str, Any]


def execute(fn: Callable[[Cell], Any], cells: list[Cell], scheduler: str | None = None,
            workers: int = 1, what: str = "cells",
            describe: Callable[[Any], str] | None = None) -> list[Any]:
    """``[fn(c) for c in cells]``, in order, wherever the cells run."""
    if scheduler is None and workers == 1:
        return [fn(c) for c in progress(cells, what)]
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as exc:  # pragma: no cover - dask is a declared dependency
        raise RuntimeError("--scheduler and --workers need dask[distributed]: pip install "
                           "'dask[distributed]'") from exc
    if scheduler is not None:
        log.info("running %d %s on the Dask cluster at %s", len(cells), what, scheduler)
        with Client(scheduler) as client:
            return _gather(client, fn, cells, as_completed, what, describe)
    # One thread per worker (Dask's nannies set the BLAS and OpenMP thread counts to 1):
    # small torch steps gain little from a second thread, a second cell gains all of it.
    log.info("running %d %s in %d local worker processes", len(cells), what, workers)
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        return _gather(client, fn, cells, as_completed, what, describe)


def _gather(client: Any, fn: Callable[[Cell], Any], cells: list[Cell], as_completed: Any,
            what: str, describe: Callable[[Any], str] | None) -> list[Any]:
    futures = client.map(fn, cells, pure=False)
    for i, fut in enumerate(progress(as_completed(futures), what, total=len(futures)), 1):
        label = describe(fut.result()) if describe is not None else ""
        log.info("%s %d/%d done %s", what, i, len(futures), label)
    return client.gather(futures)
