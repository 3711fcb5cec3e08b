"""Random and mutated bytes for every reader, for a fixed budget of examples each.

Each example is a file the command reads (an evidence CSV, a project or domains YAML, a model TOML, a fit
summary given to plot and report, a sensitivity record, a fit record and summary inside the output folder),
made either of random bytes or by mutating a valid file of the corpus (byte flips, insertions of tokens that
matter to the format, deletions, duplications). Every example must end with an exit status the command
documents (0, 2 for bad input; 1 where "no fit" is the answer), no exception out of ``main`` (no traceback),
nothing written outside the output folder, and no hang (a per-example alarm). The budget is fixed
(``max_examples``) and, on CI, derandomised (tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metaeval.cli import main

#: A budget of examples per reader is a long check, not a unit test: left out of `make test-fast`.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
EIGHT = FIXTURES / "eight_schools.csv"
MINI = FIXTURES / "mini"
HANG_SECONDS = 30

TOKENS = {
    "csv": [b",", b'"', b"\n", b"\r", b"\r\n", b"=", b"=1+1", b"@SUM(A1)", b"nan", b"inf", b"-inf", b"1e308", b"1e-320", b"-0", b"\x00",
            b"\xff", b"\xef\xbb\xbf", b"study", b"yi", b"vi", b"sei", b"domain", b"design", b"rct", b"9" * 400, b",,,,,,,,"],
    "yaml": [b"&a ", b"*a", b"[", b"]", b"{", b"}", b"? ", b": ", b"- ", b"\n", b"  ", b"'", b'"', b"#", b"!!python/object/apply:os.system ",
             b"!!binary ", b"!!set ", b"<<: *a", b"~", b"2024-02-30", b"9" * 200, b"1e999", b".nan", b"\t", b"\x00", b"\xff", b"---\n", b"..."],
    "toml": [b"[", b"]", b"[[", b"]]", b"=", b'"', b"'''", b"\n", b"{", b"}", b"9" * 5000, b"inf", b"nan", b"1979-05-27T07:32:00Z",
             b"[priors]", b"[bias]", b"tau = ", b'"halfnormal(1e300)"', b'"normal(0, 1e-320)"', b"\x00", b"\xff", b"a.b.c = 1"],
    "json": [b"{", b"}", b"[", b"]", b",", b":", b'"', b"null", b"true", b"7", b"-1e999", b"NaN", b"Infinity", b'"x"', b"[" * 3000,
             b'{"domains": 7}', b"\x00", b"\xff", b"\\u0000"],
}


def mutated(seed: bytes, kind: str):
    """A strategy of ``seed`` changed by one to eight edits; or, one time in five, random bytes."""
    edit = st.tuples(st.sampled_from(["flip", "insert", "delete", "duplicate", "token"]), st.integers(0, max(len(seed), 1)),
                     st.integers(1, 64), st.sampled_from(TOKENS[kind]), st.integers(0, 255))

    def apply(edits) -> bytes:
        data = bytearray(seed)
        for op, at, size, token, byte in edits:
            at = min(at, len(data))
            if op == "flip" and data:
                data[min(at, len(data) - 1)] = byte
            elif op == "insert":
                data[at:at] = bytes([byte]) * (size % 4 + 1)
            elif op == "delete":
                del data[at:at + size]
            elif op == "duplicate":
                data[at:at] = data[at:at + size]
            else:
                data[at:at] = token
        return bytes(data)

    return st.one_of(st.lists(edit, min_size=1, max_size=8).map(apply), st.binary(max_size=2000)) if seed else st.binary(max_size=2000)


@contextlib.contextmanager
def world():
    """A working folder with the output folder inside it; on leaving, nothing may have appeared outside ``out``."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        before = set(os.listdir(root))
        cwd = os.getcwd()
        os.chdir(root)
        try:
            yield root
        finally:
            os.chdir(cwd)
        assert set(os.listdir(root)) - {"out"} <= before | {"out"}, sorted(os.listdir(root))
        for folder in [root / "in", *(p for p in root.iterdir() if p.is_dir() and p.name not in ("in", "out"))]:
            for path in folder.rglob("*"):
                assert not path.name.endswith(".tmp"), path


def cli(argv, allowed=(0, 2)) -> int:
    """``main`` under an alarm: an exception escaping it (a traceback), a hang or an undocumented exit status fails."""
    def expire(signum, frame):
        raise TimeoutError(f"{argv[0]} still running after {HANG_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(HANG_SECONDS)
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert rc in allowed, (argv, rc)
    return rc


FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SLOW = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(st.one_of(*(mutated(p.read_bytes(), "csv") for p in sorted((FIXTURES / "bad_csv").glob("*.csv"))[:8]), mutated(EIGHT.read_bytes(), "csv")))
def test_csv_reader(data):
    with world() as root:
        (root / "in" / "e.csv").write_bytes(data)
        cli(["validate", "--csv", "in/e.csv"])
        cli(["fit", "--engine", "exact", "--csv", "in/e.csv", "--out", "out", "--format", "csv"])


@FUZZ
@given(mutated((MINI / "projects" / "demo.yaml").read_bytes(), "yaml"))
def test_project_yaml_reader(data):
    with world() as root:
        shutil.copytree(MINI, root / "in" / "data")
        (root / "in" / "data" / "projects" / "demo.yaml").write_bytes(data)
        cli(["validate", "--data", "in/data"])


@FUZZ
@given(mutated((MINI / "domains.yaml").read_bytes(), "yaml"))
def test_domains_yaml_reader(data):
    with world() as root:
        shutil.copytree(MINI, root / "in" / "data")
        (root / "in" / "data" / "domains.yaml").write_bytes(data)
        cli(["validate", "--data", "in/data"])
        cli(["fit", "--engine", "exact", "--data", "in/data", "--out", "out"])


@FUZZ
@given(st.one_of(*(mutated(p.read_bytes(), "toml") for p in sorted((REPO / "models").glob("*.toml")))))
def test_model_toml_reader(data):
    with world() as root:
        (root / "in" / "m.toml").write_bytes(data)
        cli(["fit", "--engine", "exact", "--csv", EIGHT, "--model", "in/m.toml", "--out", "out", "--format", "json"])


@pytest.fixture(scope="module")
def exact_summary() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        assert main(["fit", "--engine", "exact", "--csv", str(EIGHT), "--out", tmp, "--format", "json"]) == 0
        return (Path(tmp) / "summary.json").read_bytes()


@SLOW
@given(data=st.data())
def test_summary_reader_of_plot_and_report(exact_summary, data):
    """A summary file given to plot and report (edited, truncated, garbage)."""
    blob = data.draw(mutated(exact_summary, "json"))
    with world() as root:
        (root / "in" / "s.json").write_bytes(blob)
        cli(["plot", "forest", "--csv", EIGHT, "--summary", "in/s.json", "--domain", "all", "--out", "out/f.svg"])
        cli(["report", "--csv", EIGHT, "--summary", "in/s.json", "--output", "out/r.html"])


@SLOW
@given(data=st.data())
def test_summary_reader_with_structural_edits(exact_summary, data):
    """The same, by editing the JSON's structure: any value replaced by a number, text, list, mapping or null."""
    summary = json.loads(exact_summary)
    paths = []

    def walk(node, path):
        paths.append(path)
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, path + (k,))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, path + (i,))

    walk(summary, ())
    for _ in range(data.draw(st.integers(1, 4))):
        path = data.draw(st.sampled_from(paths[1:]))
        node = summary
        with contextlib.suppress(KeyError, IndexError, TypeError):
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = data.draw(st.sampled_from([7, -1e308, "=cmd", [], {}, None, [1, "a"], {"a": {}}, True]))
    with world() as root:
        (root / "in" / "s.json").write_text(json.dumps(summary))
        cli(["plot", "forest", "--csv", EIGHT, "--summary", "in/s.json", "--domain", "all", "--out", "out/f.svg"])
        cli(["report", "--csv", EIGHT, "--summary", "in/s.json", "--output", "out/r.html"])


@pytest.mark.slow
@SLOW
@given(data=st.data())
def test_sensitivity_record_in_the_output_folder(data):
    """OUT/sensitivity/sensitivity.json is read into the report: the output folder's contents are not trusted."""
    seed = json.dumps({"evidence_digest": "x", "grid": {}, "scenarios": [], "results": []}).encode()
    blob = data.draw(mutated(seed, "json"))
    with world() as root:
        (root / "out" / "sensitivity").mkdir(parents=True)
        (root / "out" / "sensitivity" / "sensitivity.json").write_bytes(blob)
        cli(["report", "--engine", "exact", "--csv", EIGHT, "--out", "out"])


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    """One tiny MCMC fit of eight schools; examples work on copies of its output folder."""
    out = tmp_path_factory.mktemp("fitted") / "out"
    assert main(["fit", "--csv", str(EIGHT), "--out", str(out), "--chains", "1", "--draws", "50", "--tune", "50", "--allow-failed-gate"]) == 0
    return out


@pytest.mark.mcmc
@SLOW
@given(data=st.data())
def test_fit_record_and_cached_summary_in_the_output_folder(fitted, data):
    """fit.json and the cached summary.json of a fit: `summary` and `report` must refuse or refit, never crash."""
    name = data.draw(st.sampled_from(["fit.json", "summary.json"]))
    key = (fitted / "latest.txt").read_text().strip()
    original = ((fitted / "fits" / key).resolve() / name).read_bytes()
    blob = data.draw(mutated(original, "json"))
    with world() as root:
        shutil.copytree(fitted, root / "out", symlinks=True)
        ((root / "out" / "fits" / key).resolve() / name).write_bytes(blob)
        args = ["--csv", EIGHT, "--out", "out", "--chains", "1", "--draws", "50", "--tune", "50", "--allow-failed-gate"]
        cli(["summary", *args, "--format", "json"], allowed=(0, 1))  # 1: "no fit for this evidence" (fit.json not trusted)
        cli(["report", *args], allowed=(0, 1))
