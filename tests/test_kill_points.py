"""A kill (SIGKILL) or a full disk at any point of `metaeval run` leaves the previous or the new complete
result set, never a mix, and the next run succeeds.

The points are every step of a run's writes (``metaeval.files.checkpoint``: before and after each file's rename,
a set staged, the pointer switched), listed by tracing one run (``METAEVAL_TEST_TRACE``). At each point a second
run is frozen (``METAEVAL_TEST_PAUSE_AT=#N``) and SIGKILLed, or made to fail there as a full disk does
(``METAEVAL_TEST_FAIL_AT=#N``). The exact engine covers the result set's points quickly; MCMC runs (1 chain x 50
draws) cover the fit cache's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from metaeval.cli import main
from metaeval.present import summary_csv
from metaeval.result import Result

pytestmark = pytest.mark.subprocess

REPO = Path(__file__).resolve().parent.parent
TINY = ["--chains", "1", "--draws", "50", "--tune", "50", "--allow-failed-gate"]  # 50 draws cannot pass the gate


def _csv(path: Path, rows) -> Path:
    path.write_text("study,yi,sei\n" + "".join(f"{chr(65 + i)},{y},{s}\n" for i, (y, s) in enumerate(rows)), encoding="utf-8")
    return path


def _popen(args, cwd: Path, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "metaeval.cli", *map(str, args)], cwd=cwd, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen, timeout: float = 600) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _trace(args, cwd: Path) -> list[str]:
    trace = cwd / "trace.txt"
    trace.unlink(missing_ok=True)
    done = _finish(_popen(args, cwd, METAEVAL_TEST_TRACE=str(trace)))
    assert done.returncode == 0, done.stderr
    return trace.read_text().split()


def _kill_at(args, cwd: Path, point: int) -> None:
    marker = cwd / f"paused-{point}"
    proc = _popen(args, cwd, METAEVAL_TEST_PAUSE_AT=f"#{point}", METAEVAL_TEST_PAUSE_MARKER=str(marker))
    deadline = time.monotonic() + 600
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (status {proc.returncode}) before point #{point}:\n{proc.stderr.read()}")
        assert time.monotonic() < deadline, f"point #{point} never reached"
        time.sleep(0.05)
    time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


def result_set(out: Path) -> dict:
    """The result set a reader of ``out`` sees, checked to be one whole set; returns its summary.

    ``OUT/current`` leads to one version folder; every name at the top of OUT that leads anywhere leads into it;
    its summary.csv is its summary.json's table, its report shows the same seed, and latest.txt (MCMC) names a
    trusted fit whose summary is this one.
    """
    version = (out / "current").resolve()
    assert version.parent == (out / ".versions" / "current").resolve() and version.is_dir()
    files = {p.name for p in version.iterdir()}
    assert not [n for n in files if n.endswith(".tmp")]
    for name in ("summary.json", "summary.csv", "report.html", "latest.txt"):
        link = out / name
        if link.exists():
            assert link.resolve() == version / name
        else:
            assert name not in files
    summary = json.loads((version / "summary.json").read_text())
    assert (version / "summary.csv").read_text() == summary_csv(Result.from_json((version / "summary.json").read_bytes()))
    if "report.html" in files:
        html = (version / "report.html").read_text(encoding="utf-8")
        n = sum(d["n_estimates"] for d in summary["domains"].values())
        assert re.findall(r"(\d+) estimates? from", html)[:1] == [str(n)]
        assert re.findall(r"seed (\d+)", html) == ([] if summary["seed"] is None else [str(summary["seed"])])
    if "latest.txt" in files:
        fit = out / "fits" / (version / "latest.txt").read_text().strip()
        fitted = json.loads((fit / "summary.json").read_text())  # the engine's result; the published one is judged too
        assert fitted["seed"] == summary["seed"] and {d: v["mu"] for d, v in fitted["domains"].items()} == {d: v["mu"] for d, v in summary["domains"].items()}
    return summary


def test_a_kill_at_any_point_of_run_leaves_one_whole_set_and_the_next_run_succeeds(tmp_path):
    """The exact engine: every point of writing summary.json, summary.csv and report.html and switching them in."""
    old_csv, new_csv = _csv(tmp_path / "old.csv", ((0.1, 0.1), (0.3, 0.2), (0.2, 0.15))), _csv(tmp_path / "new.csv", ((1.0, 0.5), (2.0, 0.4)))
    pristine = tmp_path / "pristine"
    first = _finish(_popen(["run", "--engine", "exact", "--csv", old_csv, "--out", pristine], tmp_path))
    assert first.returncode == 0, first.stderr
    assert _estimates(result_set(pristine)) == 3
    new_args = ["run", "--engine", "exact", "--csv", new_csv]
    points = _trace([*new_args, "--out", tmp_path / "traced"], tmp_path)
    assert len(points) >= 9 and points[-1] == "published:current"
    seen = []
    for n, point in enumerate(points, start=1):
        out = tmp_path / f"out{n}"
        shutil.copytree(pristine, out, symlinks=True)
        _kill_at([*new_args, "--out", out], tmp_path, n)
        which = _estimates(result_set(out))
        assert which == (2 if n > points.index("switch:current") + 1 else 3), (n, point)  # the new set exactly once switched in
        seen.append(which)
        again = _finish(_popen([*new_args, "--out", out], tmp_path))
        assert again.returncode == 0, (point, again.stderr)
        assert _estimates(result_set(out)) == 2
        assert not [p for p in out.rglob("*.tmp")]  # a dead writer's temporary files are gone after the next run
    assert set(seen) == {2, 3}


def _estimates(summary: dict) -> int:
    return sum(d["n_estimates"] for d in summary["domains"].values())


def test_a_full_disk_at_any_point_of_run_leaves_the_previous_set(tmp_path, capsys, monkeypatch):
    """The same points, failing as a full disk does (ENOSPC): exit 1, one line, the previous set whole (except
    while keeping the planning simulation, a cache: the run goes on without it)."""
    import metaeval.files

    old_csv, new_csv = _csv(tmp_path / "old.csv", ((0.1, 0.1), (0.3, 0.2), (0.2, 0.15))), _csv(tmp_path / "new.csv", ((1.0, 0.5), (2.0, 0.4)))
    out = tmp_path / "out"
    new_args = ["run", "--engine", "exact", "--csv", str(new_csv), "--out", str(out)]
    points = _trace(["run", "--engine", "exact", "--csv", new_csv, "--out", tmp_path / "traced"], tmp_path)
    switched = points.index("switched:current") + 1
    for n in range(1, len(points) + 1):
        shutil.rmtree(out, ignore_errors=True)
        assert main(["run", "--engine", "exact", "--csv", str(old_csv), "--out", str(out)]) == 0
        capsys.readouterr()
        monkeypatch.setattr(metaeval.files, "_CHECKPOINTS", 0)
        monkeypatch.setenv("METAEVAL_TEST_FAIL_AT", f"#{n}")
        rc = main(new_args)
        monkeypatch.delenv("METAEVAL_TEST_FAIL_AT")
        err = capsys.readouterr().err
        if re.fullmatch(r"renamed?:[0-9a-f]{32}\.json", points[n - 1]):  # keeping the comparison or the plan (OUT/kept): a cache,
            assert rc == 0 and _estimates(result_set(out)) == 2, (points[n - 1], err)  # so the run goes on without it
            assert not [p for p in out.rglob("*.tmp")]
            continue
        assert rc == 1 and "No space left on device" in err and "Traceback" not in err, (points[n - 1], err)
        kept = n >= switched  # the failure came after the switch: the new set is whole, and the message says so
        assert _estimates(result_set(out)) == (2 if kept else 3), points[n - 1]
        assert ("stopped after" in err) == kept and ("earlier results are as they were" in err) == (not kept), err
        assert not [p for p in out.rglob("*.tmp")]  # an error (unlike a kill) cleans up after itself
        assert main(new_args) == 0
        assert _estimates(result_set(out)) == 2


@pytest.mark.mcmc
def test_a_kill_at_any_point_of_an_mcmc_fit_leaves_the_previous_fit_and_the_next_run_succeeds(tmp_path):
    """The fit cache: saving the posterior and its record, switching the fit in, saving its summary."""
    from metaeval.harmonise import load_evidence
    from metaeval.sampling import SamplerSettings
    from metaeval.spec import load_spec
    from metaeval.summary import cached_summary

    csv = _csv(tmp_path / "s.csv", ((0.1, 0.1), (0.3, 0.2), (0.2, 0.15)))
    evidence, spec = load_evidence(csv=csv), load_spec("default")
    pristine = tmp_path / "pristine"
    first = _finish(_popen(["run", "--csv", csv, "--out", pristine, *TINY, "--seed", "1"], tmp_path))
    assert first.returncode == 0, first.stderr
    assert result_set(pristine)["seed"] == 1
    new_args = ["run", "--csv", csv, *TINY, "--seed", "2"]
    points = _trace([*new_args, "--out", tmp_path / "traced"], tmp_path)
    fit_points = points[: points.index("rename:latest.txt") - 4]  # up to the result set's own writes (covered above)
    assert fit_points[0] == "rename:posterior.nc" and len(fit_points) >= 13
    for n, point in enumerate(fit_points, start=1):
        out = tmp_path / f"out{n}"
        shutil.copytree(pristine, out, symlinks=True)
        _kill_at([*new_args, "--out", out], tmp_path, n)
        assert result_set(out)["seed"] == 1, point  # the result set is switched only at the end
        old = cached_summary(evidence, spec, out=out, settings=SamplerSettings(chains=1, draws=50, tune=50, seed=1))
        assert old is not None and old.seed == 1, point  # the previous fit is trusted and loads
        entries = [p for p in (out / "fits").iterdir() if not p.name.startswith(".")]
        assert all((e / "posterior.nc").is_file() and (e / "fit.json").is_file() for e in entries), point  # only whole fits
        if n in (1, len(fit_points)):  # the next run succeeds (after the earliest and the latest kill)
            again = _finish(_popen([*new_args, "--out", out, "--format", "json"], tmp_path))
            assert again.returncode == 0, (point, again.stderr)
            assert result_set(out)["seed"] == 2 == json.loads(again.stdout)["seed"]
