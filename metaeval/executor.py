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

``in_processes(fn, items)`` (and :class:`Processes`, workers started before their work is known) runs a function
over items in worker processes of this machine, without Dask: for the exact engine's many small integrals.

Seeds belong in the task dicts, so a result does not depend on where its task ran.
Worker processes get BLAS/OpenMP/numba thread counts of 1 (``WORKER_ENV``) so that
fits on several workers do not oversubscribe the cores. Dask is imported only when
a cluster is used, so importing this module is cheap.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
import traceback as _traceback
from collections.abc import Callable, Sequence
from contextlib import contextmanager
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
#: Set before a local worker process starts (read by dask's configuration as it is imported there): workers report
#: to the client, each task's error in its Result; their own log would print tracebacks of heartbeats cut short
#: when the cluster closes on Ctrl-C.
WORKER_PRE_SPAWN_ENV = {"DASK_LOGGING__DISTRIBUTED": "critical"}

SERIAL = "serial"
#: How long to wait for a scheduler to answer, and for a cluster left without workers to get one back.
CONNECT_TIMEOUT = 20.0
NO_WORKERS_TIMEOUT = 120.0
_SCHEMES = ("tcp", "tls", "ucx", "ws", "wss", "inproc")


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
    """Run one task and capture its value or its error (runs on the worker).

    Inside it dask computes synchronously: xarray's netCDF writer asks dask for the scheduler, which on a
    worker made a client of the cluster; when the cluster closed on Ctrl-C, that client's finaliser printed
    an "IOLoop is closed" traceback (3 of 3 interrupted sensitivity runs). A task never needs the cluster."""
    import dask

    start = time.perf_counter()
    where = f"{socket.gethostname()}:{os.getpid()}"
    try:
        with dask.config.set(scheduler="synchronous"):
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


def in_threads(fn: Callable[[Any], Any], items: Sequence) -> list:
    """``fn`` over ``items`` in a thread per available core, results in item order: for array work, in which NumPy
    releases the GIL (the same numbers as one after another, where ``fn`` owns its random generator). An error or
    an interrupt drops the items not yet started."""
    from concurrent.futures import ThreadPoolExecutor

    workers = min(len(items), default_workers())
    if workers <= 1:
        return [fn(x) for x in items]
    pool = ThreadPoolExecutor(workers, thread_name_prefix="metaeval")
    try:
        return list(pool.map(fn, items))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


class WorkerLost(RuntimeError):
    """A worker process of :class:`Processes` ended before it answered (killed, out of memory, or unable to import
    what it was asked to run)."""


def in_processes(fn: Callable[[Any], Any], items: Sequence, workers: int | None = None, **shown) -> list:
    """``fn`` over ``items`` in ``workers`` new processes (default: one per available core; :class:`Processes`),
    results in item order: for work of many small NumPy operations, which threads would take turns at under the GIL.
    ``shown``: :meth:`Processes.map`'s ``progress`` and ``description``."""
    with Processes(min(len(items), default_workers() if workers is None else workers)) as processes:
        return processes.map(fn, items, **shown)


class Processes:
    """Worker processes, started now and fed later (:meth:`map`), so that they start while this process does other
    work; ended by :meth:`close` (or leaving a ``with`` block). Each is a fresh interpreter running :func:`_serve`
    (``python -m metaeval.executor``: nothing of the caller's ``__main__`` is imported again, so a script needs no
    main guard), imports the modules ``preload`` names as it starts, takes the next item when it is free, and
    ignores Ctrl-C, which this process answers, ending them. One worker (or one core) starts none: :meth:`map`
    then runs here."""

    def __init__(self, workers: int | None = None, preload: Sequence[str] = (), *, even_one: bool = False):
        import site
        import subprocess
        import tempfile
        from pathlib import Path

        self.procs: list = []
        self.logs: list = []
        workers = default_workers() if workers is None else workers
        if workers < 1 or (workers == 1 and not even_one):  # ``even_one``: one worker beside this process (:class:`Background`)
            return
        # The workers import this metaeval: a checkout's folder goes on their path (a site-packages folder is on it
        # already, and put ahead of the standard library it could shadow it); -P keeps the working folder off it (a
        # metaeval/ folder there would be imported instead).
        env = {**os.environ, **WORKER_ENV}
        root = Path(__file__).resolve().parent.parent
        if root not in {Path(p).resolve() for p in site.getsitepackages() + [site.getusersitepackages()]}:
            env["PYTHONPATH"] = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        self.logs = [tempfile.TemporaryFile() for _ in range(workers)]
        with _ctrl_c_stays_here():
            self.procs = [subprocess.Popen([sys.executable, "-P", "-m", "metaeval.executor", *preload], stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, stderr=log, env=env) for log in self.logs]

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def map(self, fn: Callable[[Any], Any], items: Sequence, *, progress: bool | None = False, description: str = "items") -> list:
        """``fn`` (a module-level function) over ``items``, results in item order; the items and results must pickle.
        An error raised by ``fn`` is raised here; a worker that ends before it answers, as :class:`WorkerLost`.
        ``progress``: a progress bar on stderr (None: when it is a terminal)."""
        with _Progress(len(items), _shown(progress), description) as bar:
            if not self.procs:
                out = []
                for x in items:
                    out.append(fn(x))
                    bar.step()
                return out
            return self._map(fn, items, bar)

    def _map(self, fn: Callable[[Any], Any], items: Sequence, bar: _Progress) -> list:
        """:meth:`map` in the worker processes."""
        import pickle

        target = f"{fn.__module__}:{fn.__qualname__}"
        results: list = [None] * len(items)
        failed: list[BaseException] = []
        order = iter(range(len(items)))
        lock = threading.Lock()

        def feed(proc, log) -> None:
            try:
                while not failed:
                    with lock:
                        i = next(order, None)
                    if i is None:
                        break
                    pickle.dump((target, items[i]), proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                    proc.stdin.flush()
                    ok, value = pickle.load(proc.stdout)
                    if not ok:
                        raise value
                    results[i] = value
                    with lock:
                        bar.step()
            except (EOFError, OSError, pickle.UnpicklingError):
                log.seek(0)
                tail = log.read().decode(errors="replace").strip().splitlines()[-3:]
                failed.append(WorkerLost("a worker process ended early" + (": " + " / ".join(tail) if tail else "")))
            except BaseException as error:  # noqa: BLE001 - raised again in the caller's thread
                failed.append(error)

        threads = [threading.Thread(target=feed, args=pair, name="metaeval-worker", daemon=True) for pair in zip(self.procs, self.logs)]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.1)
        except BaseException:
            self.close()  # a Ctrl-C: the workers end now, and the feeding threads with them
            raise
        if failed:
            raise failed[0]
        return results

    def close(self) -> None:
        """End the workers (at once: they hold nothing to finish) and free their logs."""
        for proc in self.procs:
            proc.kill()
            proc.wait()
        for log in self.logs:
            log.close()
        self.procs, self.logs = [], []


class Background:
    """``fn(item)`` (a module-level function; the item and result must pickle) in a worker process started now, while
    this process does other work on another core; :meth:`result` waits for it. With one core, or once
    :meth:`cancel` ends it, nothing runs in the background and :meth:`result` computes it here."""

    def __init__(self, fn: Callable[[Any], Any], item, preload: Sequence[str] = ()):
        self.fn, self.item, self._box, self._cancelled = fn, item, {}, False
        self._processes, self._thread = None, None
        if default_workers() >= 2:
            try:
                self._processes = Processes(1, preload, even_one=True)
            except OSError:  # no process to be had (a limit on processes, say): done here when asked for
                pass
        if self._processes is not None:
            self._thread = threading.Thread(target=self._run, name="metaeval-background", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            self._box["value"] = self._processes.map(self.fn, [self.item])[0]
        except BaseException as error:  # noqa: BLE001 - given to the caller by result()
            self._box["error"] = error
        finally:
            self._processes.close()

    def result(self):
        """``fn(item)``, or the error it raised; computed here where the worker could not (it ended early, or none ran)."""
        if self._thread is not None:
            while self._thread.is_alive():  # a Ctrl-C here is answered in this thread, as ever
                self._thread.join(0.1)
        if "value" in self._box:
            return self._box["value"]
        error = self._box.get("error")
        if error is not None and not isinstance(error, WorkerLost) and not self._cancelled:
            raise error
        return self.fn(self.item)

    def cancel(self) -> None:
        """End the worker (what it computed is not needed); its thread then closes what it used."""
        self._cancelled = True
        for proc in self._processes.procs if self._processes is not None else ():
            proc.kill()

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc) -> None:
        self.cancel()


def _serve(preload: Sequence[str]) -> None:
    """A worker of :class:`Processes`: imports the modules ``preload`` names, then, for each (``module:function``,
    item) pickled on stdin, pickles on stdout (True, the function's result) or (False, the error) where it raised."""
    import importlib
    import pickle

    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # anything printed goes to the log, not into the results
    for module in preload:
        importlib.import_module(module)
    functions: dict[str, Callable] = {}
    while True:
        try:
            target, item = pickle.load(inp)
        except EOFError:
            return
        try:
            if target not in functions:
                module, name = target.split(":")
                functions[target] = getattr(importlib.import_module(module), name)
            reply = (True, functions[target](item))
        except Exception as error:  # noqa: BLE001 - the caller raises it
            reply = (False, error)
        try:
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as error:  # noqa: BLE001 - an error that does not pickle is said in words
            data = pickle.dumps((False, RuntimeError(f"{type(reply[1]).__name__}: {error}")), protocol=pickle.HIGHEST_PROTOCOL)
        out.write(data)
        out.flush()


class _Progress:
    """A rich progress bar on stderr counting finished tasks (and failures), or nothing."""

    def __init__(self, total: int, enabled: bool, description: str):
        self.bar = None
        if enabled and total:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[failed]} failed"),
                TimeElapsedColumn(),
                transient=False,
                console=Console(stderr=True),  # rich's default is stdout: a bar there would land in --format json's output
            )
            self.task = self.bar.add_task(description, total=total, failed=0)
            self.failed = 0

    def __enter__(self):
        if self.bar is not None:
            self.bar.start()
        return self

    def advance(self, result: Result) -> None:
        self.step(result.ok)

    def step(self, ok: bool = True) -> None:
        if self.bar is not None:
            self.failed += not ok
            self.bar.update(self.task, advance=1, failed=self.failed)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()


def _shown(progress) -> bool:
    """Whether a progress bar shows: ``progress`` True, or None and stderr a terminal."""
    return bool(progress) if progress is not None else sys.stderr.isatty()


def run_tasks(
    fn: Callable[..., Any],
    tasks: Sequence[dict],
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    progress: bool | Callable[[Result], None] | None = None,
    description: str = "tasks",
    label: Callable[[dict], str] | None = None,
    connect_timeout: float = CONNECT_TIMEOUT,
    no_workers_timeout: float = NO_WORKERS_TIMEOUT,
) -> list[Result]:
    """Run ``fn(**task)`` for every task; return the results in task order.

    ``scheduler``: None (local cluster), ``"serial"``, or a Dask scheduler address.
    ``workers``: local cluster size (default: one per core; ignored otherwise).
    ``progress``: True for a progress bar on stderr, None for one only when stderr
    is a terminal, or a callable called with each Result as it finishes.
    Errors inside ``fn`` are captured per task. The cluster itself fails fast and
    says why: a malformed address, or one where no Dask scheduler answers within
    ``connect_timeout`` seconds, is an InputError (exit 2); a cluster left without
    workers for ``no_workers_timeout`` seconds raises ClusterFailed naming the
    tasks that finished (``label`` names a task; default: its number).
    """
    tasks = [dict(t) for t in tasks]
    callback = progress if callable(progress) else None
    show = _shown(progress) if callback is None else False
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
            _run_distributed(fn, tasks, scheduler, workers, done, label=label,
                             connect_timeout=connect_timeout, no_workers_timeout=no_workers_timeout)
    return results  # type: ignore[return-value]


def local_cluster(workers: int | None = None):
    """A local Dask cluster: ``workers`` processes with one thread each and ``WORKER_ENV``.

    Its threads and worker processes start with SIGINT blocked (:func:`_ctrl_c_stays_here`): a Ctrl-C at the
    terminal reaches every process of the group, and only this one should answer it (once, without the
    workers' tracebacks); the workers end when the cluster is closed.
    """
    import dask
    from distributed import LocalCluster

    pre_spawn = {**dask.config.get("distributed.nanny.pre-spawn-environ", default={}), **WORKER_PRE_SPAWN_ENV}
    with _ctrl_c_stays_here(), dask.config.set({"distributed.nanny.pre-spawn-environ": pre_spawn}):
        return LocalCluster(
            n_workers=workers or default_workers(),
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # any free port: several runs may share a machine
            env=dict(WORKER_ENV),
            silence_logs=40,  # logging.ERROR
        )


@contextmanager
def _ctrl_c_stays_here():
    """Block SIGINT in this thread while the block runs: threads and processes started meanwhile inherit the block.

    A Ctrl-C arriving meanwhile is not lost: it is delivered here when the block ends.
    """
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    from multiprocessing import resource_tracker

    # Started here, first: starting it later, from the cluster's thread, would unblock SIGINT there
    # (multiprocessing blocks and then *unblocks* SIGINT around the tracker's start), and so in every worker.
    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def check_scheduler_address(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Refuse a malformed scheduler address, or one where nothing listens, at once (InputError naming --scheduler)."""
    from metaeval.errors import InputError, Problem

    def bad(message: str) -> InputError:
        return InputError(Problem("command line", "", "--scheduler", f"{address!r}: {message}"))

    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "tcp", address
    host, colon, port = rest.rpartition(":")
    if scheme not in _SCHEMES or not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise bad("expected a Dask scheduler address such as tcp://HOST:8786, or 'serial'")
    if scheme in ("tcp", "tls"):
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
        except OSError as err:
            raise bad(f"cannot connect ({err.strerror or err}); is a Dask scheduler running there (`dask scheduler`)?") from None


def _connect(address: str, timeout: float):
    """A Client of the scheduler at ``address``, or an InputError within about ``timeout`` seconds (never a hang).

    The handshake with a listener that is not a Dask scheduler can outlast Client's own timeout, so the
    Client is made in a daemon thread that is abandoned (and never keeps the process alive) if it does not
    answer in time.
    """
    from distributed import Client

    from metaeval.errors import InputError, Problem

    check_scheduler_address(address, timeout)
    outcome: dict = {}

    def attempt() -> None:
        try:
            outcome["client"] = Client(address, timeout=f"{timeout}s")
        except BaseException as err:  # noqa: BLE001 - reported below
            outcome["error"] = err

    thread = threading.Thread(target=attempt, name="metaeval-dask-connect", daemon=True)
    thread.start()
    thread.join(timeout + 5)
    if "client" in outcome:
        return outcome["client"]
    err = outcome.get("error")
    why = f"{type(err).__name__}: {err}" if err is not None and str(err) else "no answer"
    raise InputError(Problem("command line", "", "--scheduler", f"{address!r}: no Dask scheduler answered within {timeout:g} s "
                                                                f"({why}); is a Dask scheduler listening there?"))


def _run_distributed(fn, tasks: list[dict], scheduler: str | None, workers: int | None, done, *,
                     label: Callable[[dict], str] | None, connect_timeout: float, no_workers_timeout: float) -> None:
    from distributed import wait

    cluster = client = None
    try:
        if scheduler is None:
            cluster = local_cluster(workers)
            with _ctrl_c_stays_here():
                from distributed import Client

                client = Client(cluster)
        else:
            client = _connect(scheduler, connect_timeout)
        futures = [client.submit(_call, fn, task, i, pure=False) for i, task in enumerate(tasks)]
        index = {f.key: i for i, f in enumerate(futures)}
        pending, finished, alone_since = set(futures), [], None
        while pending:
            try:
                ready, pending = wait(pending, timeout=2.0, return_when="FIRST_COMPLETED")
            except TimeoutError:
                ready = set()
            for future in ready:
                i = index[future.key]
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001 - the worker died, or the task could not be sent
                    result = Result(i, tasks[i], error=f"{type(exc).__name__}: {exc}", traceback=_traceback.format_exc())
                finished.append(i)
                done(result)
            if not pending or ready:
                alone_since = None
                continue
            if _has_workers(client):
                alone_since = None
            elif alone_since is None:
                alone_since = time.monotonic()
            elif time.monotonic() - alone_since > no_workers_timeout:
                from metaeval.errors import ClusterFailed

                names = ", ".join(label(tasks[i]) if label else f"#{i + 1}" for i in sorted(finished)) or "none"
                raise ClusterFailed(
                    f"the Dask cluster{' at ' + scheduler if scheduler else ''} has had no workers for {no_workers_timeout:g} s; "
                    f"{len(finished)} of {len(tasks)} task(s) finished ({names}) and {len(pending)} did not run. "
                    "Start workers (`dask worker ADDRESS`) and run again: finished fits are reused from the cache")
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()


def _has_workers(client) -> bool:
    """Whether the scheduler has any worker (asked with a timeout: a scheduler that stopped answering has none)."""
    try:
        return bool(client.sync(client.scheduler.identity, n_workers=1, callback_timeout=10).get("workers"))
    except Exception:  # noqa: BLE001 - no answer counts as no workers
        return False


def failures(results: Sequence[Result]) -> list[Result]:
    """The results whose task raised."""
    return [r for r in results if not r.ok]


if __name__ == "__main__":
    _serve(sys.argv[1:])
