"""metaeval.executor: per-task results in order, errors captured, same numbers serially and on a local cluster."""

from __future__ import annotations

import os
import subprocess
import sys

import cloudpickle
import numpy as np
import pytest

from metaeval.executor import WORKER_ENV, Result, failures, run_tasks

# Local-cluster workers import task functions by module name; this test module is not
# on their path, so send its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def draw(seed: int, n: int) -> dict:
    """A seeded computation: the same seed must give the same numbers wherever it runs."""
    rng = np.random.default_rng(seed)
    return {"sum": float(rng.standard_normal(n).sum()), "pid": os.getpid(), "omp": os.environ.get("OMP_NUM_THREADS")}


def sometimes_fails(seed: int, n: int) -> dict:
    if seed == 2:
        raise ValueError("scenario two is broken")
    return draw(seed, n)


TASKS = [{"seed": s, "n": 1000} for s in range(5)]


def test_serial_results_in_task_order_with_values():
    results = run_tasks(draw, TASKS, scheduler="serial", progress=False)
    assert [r.index for r in results] == list(range(5))
    assert [r.task for r in results] == TASKS
    expected = [float(np.random.default_rng(s).standard_normal(1000).sum()) for s in range(5)]
    assert [r.value["sum"] for r in results] == expected
    assert all(r.ok and r.seconds is not None and r.worker for r in results)


def test_a_failing_task_is_captured_and_the_others_stand():
    seen: list[Result] = []
    results = run_tasks(sometimes_fails, TASKS, scheduler="serial", progress=seen.append)
    assert len(seen) == 5  # the progress callback sees every task, failed ones included
    bad = failures(results)
    assert [r.index for r in bad] == [2]
    assert bad[0].error == "ValueError: scenario two is broken"
    assert "Traceback" in bad[0].traceback and bad[0].value is None
    assert all(r.ok for r in results if r.index != 2)


def test_empty_task_list():
    assert run_tasks(draw, [], progress=False) == []


@pytest.fixture(scope="module")
def cluster_results():
    return run_tasks(sometimes_fails, TASKS, workers=2, progress=False)


@pytest.mark.subprocess
def test_local_cluster_gives_the_serial_numbers(cluster_results):
    serial = run_tasks(sometimes_fails, TASKS, scheduler="serial", progress=False)
    assert [r.ok for r in cluster_results] == [r.ok for r in serial]
    assert [r.value["sum"] if r.ok else None for r in cluster_results] == [r.value["sum"] if r.ok else None for r in serial]
    assert cluster_results[2].error == "ValueError: scenario two is broken"


@pytest.mark.subprocess
def test_local_cluster_runs_in_worker_processes_with_one_thread(cluster_results):
    pids = {r.value["pid"] for r in cluster_results if r.ok}
    assert os.getpid() not in pids
    assert {r.value["omp"] for r in cluster_results if r.ok} == {WORKER_ENV["OMP_NUM_THREADS"]}


@pytest.mark.subprocess
def test_importing_the_executor_does_not_import_dask():
    code = "import sys, metaeval.executor; print(any(m.split('.')[0] in ('dask', 'distributed') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def dies_once(seed: int, n: int, marker: str) -> dict:
    """Kill the worker process the first time this task runs; succeed when it is retried."""
    if seed == 1 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return draw(seed, n)


def always_dies(seed: int, n: int, marker: str) -> dict:
    if seed == 1:
        os._exit(1)
    return draw(seed, n)


@pytest.mark.subprocess
def test_a_lost_worker_is_retried_and_a_task_that_keeps_killing_workers_is_reported(tmp_path):
    tasks = [{"seed": s, "n": 100, "marker": str(tmp_path / "died")} for s in range(3)]
    retried = run_tasks(dies_once, tasks, workers=2, progress=False)
    assert (tmp_path / "died").exists()  # the worker really died once
    assert all(r.ok for r in retried)
    assert retried[1].value["sum"] == float(np.random.default_rng(1).standard_normal(100).sum())

    lost = run_tasks(always_dies, tasks, workers=2, progress=False)
    assert [r.ok for r in lost] == [True, False, True]
    assert "KilledWorker" in lost[1].error


def test_in_threads_keeps_the_items_order_runs_them_side_by_side_and_raises_the_first_error(monkeypatch):
    import threading
    import time

    from metaeval import executor

    monkeypatch.setattr(executor, "default_workers", lambda: 2)
    names = []

    def slow_first(x):
        names.append(threading.current_thread().name)
        time.sleep(0.2 if x == 0 else 0.0)  # the first item finishes last
        return x * x

    assert executor.in_threads(slow_first, [0, 1, 2, 3]) == [0, 1, 4, 9]
    assert len(set(names)) == 2 and all(n.startswith("metaeval") for n in names)  # two worker threads, not this one

    def fails_on_two(x):
        if x == 2:
            raise ValueError("item 2")
        return x

    with pytest.raises(ValueError, match="item 2"):
        executor.in_threads(fails_on_two, [0, 1, 2, 3])
    monkeypatch.setattr(executor, "default_workers", lambda: 1)
    names.clear()
    assert executor.in_threads(slow_first, [1, 2]) == [1, 4] and names == [threading.current_thread().name] * 2  # one core: here


def square_slowly(x: int) -> tuple[int, int, str | None]:
    """For in_processes: the first item finishes last; says where it ran and with how many BLAS threads."""
    import time

    time.sleep(0.3 if x == 0 else 0.0)
    if x == 13:
        raise ValueError("item 13")
    return x * x, os.getpid(), os.environ.get("OPENBLAS_NUM_THREADS")


@pytest.mark.subprocess
def test_in_processes_keeps_the_items_order_runs_them_in_other_processes_and_raises_the_first_error(monkeypatch):
    from metaeval import executor

    monkeypatch.setenv("PYTHONPATH", os.path.dirname(__file__))  # where the workers find this module
    got = executor.in_processes(square_slowly, [0, 1, 2, 3], workers=2)
    assert [value for value, _, _ in got] == [0, 1, 4, 9]
    pids = {pid for _, pid, _ in got}
    assert len(pids) == 2 and os.getpid() not in pids  # two workers; the slow first item left the rest to the other
    assert {threads for _, _, threads in got} == {"1"}
    with pytest.raises(ValueError, match="item 13"):
        executor.in_processes(square_slowly, [1, 13, 2], workers=2)
    assert [(value, pid) for value, pid, _ in executor.in_processes(square_slowly, [2, 3], workers=1)] == [(4, os.getpid()), (9, os.getpid())]


@pytest.mark.subprocess
def test_processes_started_early_serve_several_maps_and_end_when_closed(monkeypatch):
    """The sensitivity grid starts its workers before it has work for them (Processes), and feeds them later."""
    from metaeval.executor import Processes

    monkeypatch.setenv("PYTHONPATH", os.path.dirname(__file__))
    with Processes(2, preload=["json"]) as processes:
        first = processes.map(square_slowly, [0, 1, 2])
        second = processes.map(square_slowly, [3])
        procs = list(processes.procs)
    assert [v for v, _, _ in first + second] == [0, 1, 4, 9]
    assert {pid for _, pid, _ in first + second} <= {p.pid for p in procs}  # the same two workers throughout
    assert all(p.poll() is not None for p in procs) and processes.procs == []  # ended and reaped
    with Processes(1) as here:
        assert here.procs == [] and here.map(square_slowly, [5])[0][:2] == (25, os.getpid())  # one worker: none started


@pytest.mark.subprocess
def test_background_work_runs_in_a_worker_meanwhile_and_is_done_here_where_it_cannot_be(monkeypatch):
    """Background: the result from one worker process started at once (its error raised here); a worker that ends
    early, a cancelled one, or one core leaves the work to this process."""
    import metaeval.executor as executor
    from metaeval.executor import Background

    monkeypatch.setattr(executor, "default_workers", lambda: 2)
    monkeypatch.setenv("PYTHONPATH", os.path.dirname(__file__))
    with Background(square_slowly, 4) as job:
        worker = job._processes.procs[0]
        assert job.result()[:2] == (16, worker.pid) != os.getpid()
    assert worker.poll() is not None  # ended and reaped
    with Background(square_slowly, 13) as failing, pytest.raises(ValueError, match="item 13"):
        failing.result()
    lost = Background(square_slowly, 5, preload=["metaeval_has_no_such_module"])
    assert lost.result()[:2] == (25, os.getpid())  # the worker could not start: computed here
    cancelled = Background(square_slowly, 0)
    cancelled.cancel()
    assert cancelled.result()[:2] == (0, os.getpid())
    monkeypatch.setattr(executor, "default_workers", lambda: 1)
    alone = Background(square_slowly, 6)
    assert alone._processes is None and alone.result()[:2] == (36, os.getpid())


@pytest.mark.subprocess
def test_a_worker_that_cannot_start_is_said_as_lost_with_its_reason():
    from metaeval.executor import Processes, WorkerLost

    with Processes(2, preload=["metaeval_has_no_such_module"]) as broken, pytest.raises(WorkerLost, match="metaeval_has_no_such_module"):
        broken.map(square_slowly, [1, 2])


def test_processes_show_their_progress_when_asked_on_stderr(capsys):
    from metaeval.executor import Processes

    with Processes(1) as here:
        assert [v for v, _, _ in here.map(square_slowly, [1, 2, 3], progress=True, description="integrating domains")] == [1, 4, 9]
        shown = capsys.readouterr()
        assert "integrating domains" in shown.err and "3/3" in shown.err
        assert shown.out == ""  # not stdout, where --format json writes (rich's default console was stdout)
        here.map(square_slowly, [1], progress=False)
        assert capsys.readouterr().err == ""


@pytest.mark.subprocess
def test_in_processes_needs_no_main_guard_and_ctrl_c_ends_its_workers(tmp_path):
    """A script calling it at top level works (spawned multiprocessing workers would import the script again, and
    start workers of their own); a Ctrl-C reaches only the caller, which ends the workers and leaves none behind."""
    import signal
    import time

    (tmp_path / "sleeper.py").write_text(
        "import os, time\n\ndef nap(path):\n    open(path, 'w').write(str(os.getpid()))\n    time.sleep(60)\n    return path\n")
    (tmp_path / "script.py").write_text(
        "import math, sys\nfrom metaeval.executor import in_processes\nprint(in_processes(math.factorial, [3, 4, 5], 2))\n"
        "if len(sys.argv) > 1:\n    import sleeper\n    in_processes(sleeper.nap, sys.argv[1:], 2)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), root])}
    done = subprocess.run([sys.executable, str(tmp_path / "script.py")], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "[6, 24, 120]\n", done.stderr
    marks = [tmp_path / "a", tmp_path / "b"]
    proc = subprocess.Popen([sys.executable, str(tmp_path / "script.py"), *map(str, marks)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not all(m.exists() and m.read_text() for m in marks) and time.monotonic() < deadline:
        time.sleep(0.1)
    pids = [int(m.read_text()) for m in marks]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    for pid in pids:  # ended and reaped
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
