"""Running independent tasks (one task = one fit) serially or on Dask distributed.

``run_tasks(fn, tasks)`` calls ``fn(**task)`` for every task dict and returns one
:class:`Result` per task, in task order, whatever order they finished in. A task
that raises is captured in its ``Result`` (``ok`` False, ``error``, ``traceback``)
and does not stop the others. Where the tasks run:

- ``scheduler=None`` (default): an in-process local Dask cluster, one worker process
  per core (or ``workers``), one thread each; nothing to start beforehand.
- ``scheduler="serial"``: in this process, one after another, no Dask at all (the
  reference run; also what a single task with ``workers=1`` is best served by).
- ``scheduler="tcp://HOST:PORT"``: a running cluster (``dask scheduler`` and
  ``dask worker``); ``fn`` must be importable there (a module-level function).

Seeds belong in the task dicts, so a result does not depend on where its task ran.
Worker processes get BLAS/OpenMP/numba thread counts of 1 (``WORKER_ENV``) so that
fits on several workers do not oversubscribe the cores. Dask is imported only when
a cluster is used, so importing this module is cheap.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import traceback as _traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Environment of local worker processes: one thread per library, so n workers use n cores.
WORKER_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
    "RAYON_NUM_THREADS": "1",
    "PYTHONWARNINGS": "ignore",
}

SERIAL = "serial"


@dataclass
class Result:
    """The outcome of one task: its value, or the error it raised, and where and how long it ran."""

    index: int
    task: dict
    value: Any = None
    error: str | None = None  # "ExceptionType: message"
    traceback: str | None = None
    worker: str | None = None  # host:pid that ran it
    seconds: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


def _call(fn: Callable[..., Any], task: dict, index: int) -> Result:
    """Run one task and capture its value or its error (runs on the worker)."""
    start = time.perf_counter()
    where = f"{socket.gethostname()}:{os.getpid()}"
    try:
        value = fn(**task)
    except Exception as exc:  # noqa: BLE001 - captured per task by design
        return Result(
            index,
            task,
            error=f"{type(exc).__name__}: {exc}",
            traceback=_traceback.format_exc(),
            worker=where,
            seconds=time.perf_counter() - start,
        )
    return Result(index, task, value=value, worker=where, seconds=time.perf_counter() - start)


def default_workers() -> int:
    """Worker processes for a local cluster: one per available core."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class _Progress:
    """A rich progress bar counting finished tasks (and failures), or nothing."""

    def __init__(self, total: int, enabled: bool, description: str):
        self.bar = None
        if enabled and total:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[failed]} failed"),
                TimeElapsedColumn(),
                transient=False,
            )
            self.task = self.bar.add_task(description, total=total, failed=0)
            self.failed = 0

    def __enter__(self):
        if self.bar is not None:
            self.bar.start()
        return self

    def advance(self, result: Result) -> None:
        if self.bar is not None:
            self.failed += not result.ok
            self.bar.update(self.task, advance=1, failed=self.failed)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()


def run_tasks(
    fn: Callable[..., Any],
    tasks: Sequence[dict],
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    progress: bool | Callable[[Result], None] | None = None,
    description: str = "tasks",
) -> list[Result]:
    """Run ``fn(**task)`` for every task; return the results in task order.

    ``scheduler``: None (local cluster), ``"serial"``, or a Dask scheduler address.
    ``workers``: local cluster size (default: one per core; ignored otherwise).
    ``progress``: True for a progress bar on stderr, None for one only when stderr
    is a terminal, or a callable called with each Result as it finishes.
    Errors inside ``fn`` are captured per task; an error reaching the cluster
    itself (address unreachable) raises.
    """
    tasks = [dict(t) for t in tasks]
    callback = progress if callable(progress) else None
    show = bool(progress) if progress is not None and callback is None else (progress is None and sys.stderr.isatty())
    results: list[Result | None] = [None] * len(tasks)
    with _Progress(len(tasks), show, description) as bar:

        def done(result: Result) -> None:
            results[result.index] = result
            bar.advance(result)
            if callback is not None:
                callback(result)

        if scheduler == SERIAL or not tasks:
            for i, task in enumerate(tasks):
                done(_call(fn, task, i))
        else:
            _run_distributed(fn, tasks, scheduler, workers, done)
    return results  # type: ignore[return-value]


def local_cluster(workers: int | None = None):
    """A local Dask cluster: ``workers`` processes with one thread each and ``WORKER_ENV``."""
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=workers or default_workers(),
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",  # any free port: several runs may share a machine
        env=dict(WORKER_ENV),
        silence_logs=40,  # logging.ERROR
    )


def _run_distributed(fn, tasks: list[dict], scheduler: str | None, workers: int | None, done) -> None:
    from distributed import Client, as_completed

    cluster = None
    try:
        if scheduler is None:
            cluster = local_cluster(workers)
            client = Client(cluster)
        else:
            client = Client(scheduler, timeout="20s")
        try:
            futures = [client.submit(_call, fn, task, i, pure=False) for i, task in enumerate(tasks)]
            index = {f.key: i for i, f in enumerate(futures)}
            for future in as_completed(futures):
                i = index[future.key]
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001 - the worker died, or the task could not be sent
                    result = Result(i, tasks[i], error=f"{type(exc).__name__}: {exc}", traceback=_traceback.format_exc())
                done(result)
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()


def failures(results: Sequence[Result]) -> list[Result]:
    """The results whose task raised."""
    return [r for r in results if not r.ok]
