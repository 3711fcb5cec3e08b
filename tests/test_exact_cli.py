"""`metaeval fit --engine exact` as a command: what it imports, what it leaves under --out, and the CSV table it fits.

Its speed (the target: a 1,000-study CSV well under a second, whole command) is measured in bench/bench_exact.py,
not asserted here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from metaeval.cli import main
from metaeval.evidence import raw_table, read_evidence_base
from metaeval.evidence_csv import read_csv
from metaeval.exact import fit_exact
from metaeval.harmonise import (
    _domain_dicts,
    evidence_digest,
    evidence_frame,
    evidence_records,
    harmonise,
    load_evidence,
)
from metaeval.spec import load_spec

REPO = Path(__file__).resolve().parent.parent
EIGHT = Path(__file__).parent / "fixtures" / "eight_schools.csv"
#: Never needed by the exact engine on a CSV. (scipy.linalg is not listed: scipy.special, whose ndtr the
#: engine uses, imports it itself.)
HEAVY = ("pandas", "pymc", "pytensor", "nutpie", "arviz", "xarray", "matplotlib", "scipy.stats", "dask")


@pytest.mark.subprocess
def test_exact_fit_imports_no_pandas_sampler_plotting_or_scipy_stats(tmp_path):
    code = ("import sys\nfrom metaeval.cli import main\nrc = main(sys.argv[1:])\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\nsys.exit(rc)")
    proc = subprocess.run(
        [sys.executable, "-c", code, "fit", "--engine", "exact", "--csv", str(EIGHT), "--format", "json", "--out", str(tmp_path / "out")],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines()[-1] == "[]"


def test_exact_fit_writes_the_summary_it_prints_under_out(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--engine", "exact", "--csv", str(EIGHT), "--out", str(out)]
    assert main(["fit", *args, "--format", "json"]) == 0
    printed = capsys.readouterr().out
    assert (out / "summary.json").read_text(encoding="utf-8") == printed
    # the set (OUT/current, a link to its folder under .versions) and its files linked at the top; no temporary file left behind
    assert sorted(p.name for p in out.iterdir()) == [".versions", "current", "summary.csv", "summary.json"]
    assert sorted(p.name for p in (out / "current").iterdir()) == ["summary.csv", "summary.json"]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert main(["summary", *args, "--format", "csv"]) == 0  # the exact summary command recomputes the same numbers
    assert (out / "summary.csv").read_text(encoding="utf-8") == capsys.readouterr().out
    assert main(["summary", *args, "--format", "json"]) == 0
    assert capsys.readouterr().out == printed

    (out / "summary.json").unlink()
    assert main(["fit", *args, "--format", "table"]) == 0  # any --format: the file is always the JSON
    capsys.readouterr()
    assert (out / "summary.json").read_text(encoding="utf-8") == printed

    # the file is one `metaeval plot` reads (its default is metaeval-out/summary.json, the latest fit's)
    assert main(["plot", "forest", "--csv", str(EIGHT), "--summary", str(out / "summary.json"), "--domain", "all",
                 "--out", str(tmp_path / "f.svg")]) == 0
    assert (tmp_path / "f.svg").is_file()


def test_refused_out_leaves_nothing(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("a file, not a folder")
    assert main(["fit", "--engine", "exact", "--csv", str(EIGHT), "--out", str(taken)]) == 2
    assert "expected an output folder" in capsys.readouterr().err
    assert taken.read_text() == "a file, not a folder"


@pytest.mark.parametrize("estimand", ["itt", "tot"])
def test_csv_evidence_is_read_csv_then_harmonise(estimand, tmp_path):
    """load_evidence harmonises a CSV row by row and makes one DataFrame; the public steps give the same table."""
    mods = tmp_path / "mods.csv"
    mods.write_text("study,yi,vi,domain,design,project,x,note\nA,0.1,0.01,emp,rct,P1,1.5,hello\nB,0.3,0.0025,emp,,P1,2,=cmd()\n"
                    "C,-0.2,0.04,,before_after,,abc,\n D ,0.5,0.09,wb,rct,P2,3,\n", encoding="utf-8")
    for path in (EIGHT, mods):
        table = load_evidence(csv=path, estimand=estimand)
        steps = harmonise(read_csv(path), estimand=estimand)
        pd.testing.assert_frame_equal(table[list(steps.columns)], steps)
        assert table[[c for c in table.columns if c not in steps.columns]].isna().all().all()  # the core columns a CSV lacks


@pytest.mark.parametrize("estimand", ["itt", "tot"])
def test_bundled_evidence_is_raw_table_then_harmonise(estimand):
    """The bundled evidence, read as rows and made a table once, equals the public DataFrame steps."""
    base = read_evidence_base()
    steps = harmonise(raw_table(base), _domain_dicts(base), estimand=estimand)
    table = load_evidence(estimand=estimand)
    pd.testing.assert_frame_equal(table[list(steps.columns)], steps)
    assert sorted(table.columns) == sorted(steps.columns)


@pytest.mark.parametrize("source", ["bundled", "csv"])
def test_rows_and_table_give_the_same_digest_and_exact_summary(source):
    """The exact CLI path works on rows (no pandas); the notebook passes the table: same digest, same numbers."""
    csv = EIGHT if source == "csv" else None
    records = evidence_records(csv=csv)
    table = load_evidence(csv=csv)
    pd.testing.assert_frame_equal(evidence_frame(records), table)
    assert evidence_digest(records) == evidence_digest(table)
    assert evidence_digest(records[::-1]) == evidence_digest(table)  # row order does not matter
    changed = [dict(r) for r in records]
    first = next(r for r in changed if r["poolable"])
    first["yi"] += 1.0
    assert evidence_digest(changed) != evidence_digest(records)
    spec = load_spec("default")
    assert fit_exact(records, priors=spec.priors) == fit_exact(table, priors=spec.priors)
