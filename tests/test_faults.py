"""Faults: atomic writes survive SIGKILL, corrupt or stale caches are refitted, failures are never results.

The kill tests run `metaeval` in a subprocess with a test hook (``METAEVAL_TEST_PAUSE_BEFORE_RENAME``, see
``metaeval/files.py``) that freezes the process after it has written a temporary file and before the
rename, the last moment at which a run can die; the test then SIGKILLs it and checks that the previous
result is intact and loadable. MCMC fits are tiny (1-2 chains x 50 draws): these tests are about files.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from metaeval.cli import main
from metaeval.errors import SamplingFailed
from metaeval.files import atomic_path, write_atomic
from metaeval.harmonise import load_evidence
from metaeval.present import summary_table
from metaeval.sampling import SamplerSettings, file_sha256, fit, load_posterior, verify_fit
from metaeval.spec import load_spec
from metaeval.summary import SUMMARY_VERSION, cached_summary, fit_and_summarise

REPO = Path(__file__).resolve().parent.parent
TINY = SamplerSettings(chains=1, draws=50, tune=50, seed=5)


def _csv(path: Path, rows=((0.1, 0.1), (0.3, 0.2), (0.2, 0.15))) -> Path:
    path.write_text("study,yi,sei\n" + "".join(f"{chr(65 + i)},{y},{s}\n" for i, (y, s) in enumerate(rows)))
    return path


# --- atomic writes in-process ---------------------------------------------------------------------------------


def test_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    target = write_atomic(tmp_path / "summary.json", '{"old": true}\n')
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"new": tru')  # half written, then the writer dies
            raise RuntimeError("killed")
    assert target.read_text() == '{"old": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_interrupt_is_handled_like_any_failure(tmp_path):
    target = write_atomic(tmp_path / "r.html", "old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("new")
            raise KeyboardInterrupt
    assert target.read_text() == "old" and len(list(tmp_path.iterdir())) == 1


# --- SIGKILL in a subprocess ------------------------------------------------------------------------------------


def _start(args: list[str], cwd: Path, pause: str | None = None, marker: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if pause:
        env.update(METAEVAL_TEST_PAUSE_BEFORE_RENAME=pause, METAEVAL_TEST_PAUSE_MARKER=str(marker))
    return subprocess.Popen([sys.executable, "-m", "metaeval.cli", *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill_when_paused(proc: subprocess.Popen, marker: Path, timeout: float = 300) -> Path:
    """Wait until the process reports that it froze before a rename, then SIGKILL it; the temporary file's path."""
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the process ended (status {proc.returncode}) before the pause:\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the process never reached the pause")
        time.sleep(0.05)
    time.sleep(0.1)  # the marker is written just before the sleep
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return Path(marker.read_text())


def _finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.subprocess
def test_report_killed_before_rename_leaves_the_previous_report(tmp_path):
    """The exact engine needs no MCMC: fast, and the report is written by the same atomic writer."""
    first, second = _csv(tmp_path / "a.csv"), _csv(tmp_path / "b.csv", rows=((5, 1), (6, 1)))
    report = tmp_path / "out" / "report.html"
    done = _finish(_start(["report", "--engine", "exact", "--csv", str(first), "--output", str(report)], tmp_path))
    assert done.returncode == 0, done.stderr
    before = report.read_bytes()
    marker = tmp_path / "paused"
    tmp = _kill_when_paused(_start(["report", "--engine", "exact", "--csv", str(second), "--output", str(report)], tmp_path, "report.html", marker), marker)
    assert report.read_bytes() == before  # the previous report, byte for byte
    assert tmp.is_file() and tmp.parent == report.parent and tmp.read_bytes() != before  # the new one was complete but never renamed
    # the next run is not disturbed by the orphaned temporary file, and removes it (its writer is dead)
    new = tmp.read_bytes()
    done = _finish(_start(["report", "--engine", "exact", "--csv", str(second), "--output", str(report)], tmp_path))
    assert done.returncode == 0 and report.read_bytes() == new
    assert not tmp.exists() and not list(report.parent.glob(".*.tmp"))


def test_temporary_files_of_live_writers_are_left_alone(tmp_path):
    """Only a dead writer's temporary file is an orphan: one of a running process (this one) stays."""
    target = tmp_path / "summary.json"
    with atomic_path(target) as mine:
        mine.write_text("in progress")
        write_atomic(target, "another writer")  # cleans orphans of summary.json while `mine` is being written
        assert mine.read_text() == "in progress"
    assert target.read_text() == "in progress"


@pytest.mark.subprocess
def test_fit_killed_mid_write_leaves_the_previous_result_intact_and_loadable(tmp_path):
    csv = _csv(tmp_path / "small.csv")
    out = tmp_path / "out"
    common = ["--csv", str(csv), "--out", str(out), "--chains", "1", "--draws", "50", "--tune", "50", "--format", "json", "--allow-failed-gate"]
    first = _finish(_start(["fit", *common, "--seed", "1"], tmp_path))
    assert first.returncode == 0, first.stderr
    previous = (out / "summary.json").read_bytes()
    assert json.loads(previous)["seed"] == 1

    # 1. killed while saving the new posterior: the new fit was never switched in, the old result stands
    old_key = (out / "latest.txt").read_text().strip()
    marker = tmp_path / "paused1"
    _kill_when_paused(_start(["fit", *common, "--seed", "2"], tmp_path, "posterior.nc", marker), marker)
    assert (out / "summary.json").read_bytes() == previous
    assert json.loads((out / "summary.json").read_text())["seed"] == 1
    assert [p.name for p in (out / "fits").iterdir() if not p.name.startswith(".")] == [old_key]  # only complete fits are entries

    # 2. killed while writing the new fit's summary (its posterior and fit.json already switched in)
    marker = tmp_path / "paused2"
    _kill_when_paused(_start(["fit", *common, "--seed", "2"], tmp_path, "summary.json", marker), marker)
    assert (out / "summary.json").read_bytes() == previous
    assert load_posterior(out / "fits" / old_key / "posterior.nc")["posterior"].sizes["draw"] == 50  # the old posterior loads
    new_dir = next(p for p in (out / "fits").iterdir() if not p.name.startswith(".") and p.name != old_key)
    assert (new_dir / "posterior.nc").is_file() and not (new_dir / "summary.json").exists()

    # 3. the next run picks up the saved posterior (hash checked), summarises it and finishes the job
    again = _finish(_start(["summary", *common, "--seed", "2"], tmp_path))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["seed"] == 2
    assert (new_dir / "summary.json").is_file()


# --- the cache: corrupt or stale entries are detected by hash and refitted ----------------------------------------


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One tiny fit, kept pristine; tests work on copies."""
    root = tmp_path_factory.mktemp("fitted")
    table = load_evidence(csv=_csv(root / "small.csv"))
    spec = load_spec("default")
    summary, result = fit_and_summarise(table, spec, out=root / "out", settings=TINY, progress=False)
    return table, spec, summary, result


def _copy(fitted, tmp_path):
    table, spec, summary, result = fitted
    out = tmp_path / "out"
    shutil.copytree(result.directory.parent.parent, out)
    return table, spec, summary, out / "fits" / result.key


@pytest.mark.mcmc
def test_fit_record_carries_the_hashes(fitted):
    _, spec, summary, result = fitted
    record = json.loads((result.directory / "fit.json").read_text())
    assert len(record["posterior_sha256"]) == 64 and len(record["summary_sha256"]) == 64
    assert record["model_sha256"] == spec.digest() == summary.provenance.model_sha256
    assert record["evidence_sha256"] == summary.provenance.evidence_sha256
    assert verify_fit(result.directory, result.key) is None


@pytest.mark.mcmc
@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "delete_record", "stale_record"])
def test_corrupt_or_stale_cache_is_detected_and_refitted(damage, fitted, tmp_path, caplog):
    table, spec, summary, directory = _copy(fitted, tmp_path)
    posterior = directory / "posterior.nc"
    if damage == "truncate":
        posterior.write_bytes(posterior.read_bytes()[: posterior.stat().st_size // 2])
    elif damage == "flip_byte":
        data = bytearray(posterior.read_bytes())
        data[len(data) // 2] ^= 0xFF
        posterior.write_bytes(bytes(data))
    elif damage == "delete_record":
        (directory / "fit.json").unlink()
    else:  # a record from another fit: its key and hash do not match this folder
        record = json.loads((directory / "fit.json").read_text())
        record["key"] = "0" * 20
        (directory / "fit.json").write_text(json.dumps(record))
    assert verify_fit(directory, directory.name) is not None
    # `summary` never refits: it refuses the damaged cache and says why
    assert cached_summary(table, spec, out=directory.parent.parent, settings=TINY) is None
    assert "cannot be trusted" in caplog.text
    # `fit` detects it, refits, and gets the same numbers (same seed, same environment)
    again, result = fit_and_summarise(table, spec, out=directory.parent.parent, settings=TINY, progress=False)
    assert not result.cached and "fitting again" in caplog.text
    assert again.to_json() == summary.to_json()
    assert verify_fit(directory, directory.name) is None


@pytest.mark.mcmc
def test_tampered_cached_summary_is_recomputed_from_the_posterior(fitted, tmp_path):
    table, spec, summary, directory = _copy(fitted, tmp_path)
    doctored = json.loads((directory / "summary.json").read_text())
    doctored["domains"]["all"]["mu"]["mean"] = 99.0  # valid JSON, wrong number
    (directory / "summary.json").write_text(json.dumps(doctored))
    again, result = fit_and_summarise(table, spec, out=directory.parent.parent, settings=TINY, progress=False)
    assert result.cached  # the posterior was fine: no refit
    assert again.domains["all"].mu.mean != 99.0 and again.to_json() == summary.to_json()
    assert cached_summary(table, spec, out=directory.parent.parent, settings=TINY) == summary


@pytest.mark.mcmc
def test_summary_of_an_older_summary_version_is_recomputed_without_refitting(fitted, tmp_path):
    """A fit cached before summarise changed (SUMMARY_VERSION): its posterior is reused, its summary made again."""
    table, spec, summary, directory = _copy(fitted, tmp_path)
    old = json.loads((directory / "summary.json").read_text())
    old["domains"]["all"]["projects"][0]["pooling"] = 0.123  # what an older summarise might have said
    (directory / "summary.json").write_text(json.dumps(old))
    record = json.loads((directory / "fit.json").read_text())
    assert record["summary_version"] == SUMMARY_VERSION
    record.update(summary_sha256=file_sha256(directory / "summary.json"), summary_version=SUMMARY_VERSION - 1)
    (directory / "fit.json").write_text(json.dumps(record))
    again, result = fit_and_summarise(table, spec, out=directory.parent.parent, settings=TINY, progress=False)
    assert result.cached  # no refit
    assert again.to_json() == summary.to_json()
    assert json.loads((directory / "fit.json").read_text())["summary_version"] == SUMMARY_VERSION


# --- failures are reported as failures ------------------------------------------------------------------------


@pytest.mark.subprocess
def test_sampler_failure_is_an_error_not_a_result(tmp_path, monkeypatch, capsys):
    import nutpie

    def broken(*args, **kwargs):
        raise RuntimeError("Initial evaluation of model at starting point failed!")

    monkeypatch.setattr(nutpie, "sample", broken)
    out = tmp_path / "out"
    write_atomic(out / "summary.json", '{"previous": true}\n')
    rc = main(["fit", "--csv", str(_csv(tmp_path / "s.csv")), "--out", str(out), "--chains", "1", "--draws", "10", "--tune", "10", "--format", "json"])
    captured = capsys.readouterr()
    assert rc == 1
    assert captured.out == ""  # no result printed
    assert "the sampler failed" in captured.err and "Initial evaluation" in captured.err and "Traceback" not in captured.err
    assert (out / "summary.json").read_text() == '{"previous": true}\n'  # nothing overwritten
    assert not list((out / "fits").rglob("posterior.nc")) if (out / "fits").exists() else True


def test_non_finite_draws_are_a_sampler_failure(monkeypatch):
    import numpy as np
    import xarray as xr

    from metaeval import sampling
    from metaeval.harmonise import load_evidence as _load  # noqa: F401
    from metaeval.model import build_model

    def nan_draws(*args, **kwargs):
        post = xr.Dataset({"mu": (("chain", "draw"), np.array([[0.1, np.nan]]))})
        return xr.DataTree.from_dict({"posterior": post})

    monkeypatch.setattr(sampling, "_sample_nutpie", nan_draws)
    table = load_evidence(csv=_csv(Path(os.environ.get("TMPDIR", "/tmp")) / f"nan_{os.getpid()}.csv"))
    with pytest.raises(SamplingFailed, match="non-finite draws .* mu"):
        fit(build_model(table, load_spec("default")), chains=1, draws=2, tune=0, progress=False)


@pytest.mark.mcmc
def test_failed_gate_is_reported_as_failed_everywhere(fitted, tmp_path, capsys):
    """50 draws cannot pass the gate (ESS >= 400): JSON, table, report and exit status all say so."""
    from metaeval.harmonise import load_evidence as _  # noqa: F401
    from metaeval.report import write_report

    table, spec, summary, result = fitted
    diag = summary.diagnostics
    assert diag.passed is False and any("ESS" in f for f in diag.failures)
    assert "diagnostics gate FAILED" in summary_table(summary)
    html = Path(write_report(tmp_path / "r.html", table, summary)).read_text(encoding="utf-8")
    assert 'id="gate-failed"' in html
    # from the command line: a warning on stderr and exit 3 (served from the cache, no refit)
    csv = result.directory.parent.parent.parent / "small.csv"
    args = ["fit", "--csv", str(csv), "--out", str(result.directory.parent.parent), "--chains", "1", "--draws", "50", "--tune", "50", "--seed", "5", "--format", "json"]
    assert main(args) == 3
    captured = capsys.readouterr()
    assert json.loads(captured.out)["diagnostics"]["passed"] is False
    assert "diagnostics gate FAILED" in captured.err and "do not rely on these numbers" in captured.err
