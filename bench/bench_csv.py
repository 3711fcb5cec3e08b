"""`metaeval validate --csv` on a million-row CSV: CPU seconds and peak memory (the target: under 15 s and 1 GB).

Run: .venv/bin/python bench/bench_csv.py [--rows 1000000] [--runs 2] [--cases NAME,...] [--package DIR --label COMMIT]

Writes metafor-style CSVs of ``--rows`` estimates (seed 1: yi ~ N(0, 1) to 5 decimals, sei ~ U(0.05, 1) to 4;
study ids s0, s1, ...) into a temporary folder, then runs ``metaeval validate --csv`` on each in ``--runs`` fresh
processes and records, per run, the CPU seconds (user + system) and peak resident memory (``ru_maxrss``) of the
command's process, its wall time and exit status. The cases:

- ``plain``: the columns study, yi, sei (23 MB);
- ``domains``: study, yi, sei, domain, design (7 domains, two designs; 34 MB);
- ``bad``: as ``plain`` with every 100th yi unparsable: exit 2 and 10,000 problems, each named.

Results go to ``bench/results/csv-validate-<date>.json`` (``-2``, ... for later runs that day) with the commit
measured and the load average before each case; the machine is shared, so read CPU seconds, not wall time.
``--package DIR`` measures the ``metaeval`` package in DIR instead (e.g. an older commit's, from ``git archive``),
for a before/after comparison in one session.

Results (2026-11-30, 2 shared cores at load 6-9; CPU seconds and peak RSS of the command, 2 fresh runs each):

- 24b7e99, the CSV path main has at 76477f8 (``csv-validate-2026-11-30-2.json``): plain 84.7 / 82.6 CPU-s,
  4.54 GB peak (170-199 s wall). Where it went: pydantic per row, one dict of about 45 keys per row, a DataFrame
  of those dicts turned back into dicts twice, and the consistency checks run twice.
- 1dc33ca (``csv-validate-2026-11-30.json``): plain 2.7 CPU-s and 315 MB; domains 4.1 CPU-s and 324 MB; bad
  (exit 2, 10,000 problems named) 2.6 CPU-s and 290 MB. Within the targets: each column of a block of 65,536
  rows is checked in one pydantic call (metaeval.evidence_csv), and the rows are columns, not dicts
  (metaeval.columns).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from scaling import write_result

ROOT = Path(__file__).resolve().parents[1]
TARGET_CPU_S, TARGET_PEAK_MB = 15.0, 1000.0

CASES = {
    "plain": ("study,yi,sei", 0),
    "domains": ("study,yi,sei,domain,design", 0),
    "bad": ("study,yi,sei", 100),
}

# One fresh process runs the command in a child and reports the child's resources.
CHILD = """
import json, os, resource, subprocess, sys, time
t = time.perf_counter()
r = subprocess.run([sys.executable, "-c", "import sys; from metaeval.cli import main; sys.exit(main(sys.argv[1:]))",
                    "validate", "--csv", sys.argv[1]], capture_output=True, text=True)
wall = time.perf_counter() - t
use = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": r.returncode, "cpu_s": round(use.ru_utime + use.ru_stime, 2), "peak_mb": round(use.ru_maxrss / 1024, 1),
                  "wall_s": round(wall, 2), "stdout_head": r.stdout[:160], "stderr_lines": r.stderr.count(chr(10)),
                  "stderr_head": r.stderr[:240]}))
"""


def write_csv(path: Path, rows: int, columns: list[str], bad_every: int = 0) -> None:
    rng = random.Random(1)
    designs = ("rct", "unspecified")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(",".join(columns) + "\n")
        for i in range(rows):
            cells = {"study": f"s{i}", "yi": f"{rng.gauss(0, 1):.5f}", "sei": f"{rng.uniform(0.05, 1):.4f}",
                     "domain": f"d{i % 7}", "design": designs[i % 2]}
            if bad_every and i % bad_every == bad_every - 1:
                cells["yi"] = "n/a"
            fh.write(",".join(cells[c] for c in columns) + "\n")


def python(code: str, *args: str, package: Path | None, cwd: Path) -> str:
    """The output of ``python -c code args`` in a fresh process that imports metaeval from ``package`` if given."""
    env = dict(os.environ)
    if package is not None:  # found before the installed (editable) metaeval
        env["PYTHONPATH"] = str(package)
    # cwd: not the checkout, which `python -c` would put first on sys.path
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, env=env, cwd=cwd).stdout


def revision(package: Path | None) -> str:
    if package is not None:
        return f"package at {package}"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return head + (" (with uncommitted changes)" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--package", type=Path, help="a folder holding another metaeval package to measure")
    parser.add_argument("--label", help="what --package holds, for the record (e.g. the commit it was archived from)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    args = parser.parse_args()
    date = dt.date.today().isoformat()
    record = {"what": "validate --csv", "date": date, "commit": args.label or revision(args.package), "machine": platform.platform(),
              "cpus": os.cpu_count(), "python": platform.python_version(), "rows": args.rows,
              "targets": {"cpu_s": TARGET_CPU_S, "peak_mb": TARGET_PEAK_MB}, "result": {}}
    with tempfile.TemporaryDirectory() as tmp:
        record["package"] = python("import metaeval; print(metaeval.__file__)", package=args.package, cwd=Path(tmp)).strip()
        print(f"{record['commit']}: {record['package']}")
        for name in args.cases.split(","):
            columns, bad_every = CASES[name]
            csv = Path(tmp) / f"{name}.csv"
            write_csv(csv, args.rows, columns.split(","), bad_every)
            runs = []
            for _ in range(args.runs):
                load = os.getloadavg()[0]
                runs.append({"load_before": round(load, 2), **json.loads(python(CHILD, str(csv), package=args.package, cwd=Path(tmp)))})
                r = runs[-1]
                print(f"{name:8s} {csv.stat().st_size / 1e6:5.1f} MB  exit {r['rc']}  {r['cpu_s']:6.2f} CPU-s  {r['peak_mb']:7.1f} MB peak"
                      f"  {r['wall_s']:6.2f} s wall  load {load:.1f}", flush=True)
            record["result"][name] = {"columns": columns, "bad_every": bad_every, "mb": round(csv.stat().st_size / 1e6, 1), "runs": runs,
                                      "meets_target": all(r["cpu_s"] < TARGET_CPU_S and r["peak_mb"] < TARGET_PEAK_MB for r in runs)}
    path = write_result(f"csv-validate-{date}", record)
    print(f"written {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
