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
