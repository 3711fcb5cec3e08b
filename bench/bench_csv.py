"""`metaeval validate --csv` on a million-row CSV: wall time and peak memory (the target: under 15 s and 1 GB).

Run: .venv/bin/python bench/bench_csv.py [--rows 1000000] [--repeats 3] [--columns study,yi,sei]

Writes a metafor-style CSV of ``--rows`` estimates (seed 1: yi ~ N(0, 1) to 5 decimals, sei ~ U(0.05, 1) to 4;
study ids s0, s1, ...; with ``--columns study,yi,sei,domain,design`` also 7 domains and two designs) into a
temporary folder, then runs the command in fresh processes and prints, per run, the wall time and the peak
resident memory of the child (``ru_maxrss``), and their medians. Run it on an idle machine: it is a timing.

Results (2 cores shared with other jobs; the load average is printed, and times scale with it):

- main at 5390352, 1,000,000 rows of study,yi,sei (23 MB): 65.6 s, 3.45 GB peak (load about 2).
- i14 after merging main at a678743: 150 s, 3.68 GB peak (load 5.7). Not within the targets.

Where it goes (cProfile, 100,000 rows, 32 s at load 6): reading and checking the CSV row by row 4.2 s
(pydantic per row); harmonising into one dict per row 5.3 s; `validate` then builds a DataFrame of those
dicts (2.3 s) and turns it back into dicts twice (``to_dict``: 13.7 s, pandas 3's Arrow-backed strings box each
cell) to run the consistency checks again (4.5 s) that ``evidence_records`` had already run. Memory is one
dict of about 45 keys per row (about 2.3 KB) plus the DataFrame. Meeting the targets needs a columnar path for
a CSV (read with pandas' C parser, checked and harmonised column-wise, the table built once), not faster rows.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def write_csv(path: Path, rows: int, columns: list[str]) -> None:
    rng = random.Random(1)
    designs = ("rct", "unspecified")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(",".join(columns) + "\n")
        for i in range(rows):
            cells = {"study": f"s{i}", "yi": f"{rng.gauss(0, 1):.5f}", "sei": f"{rng.uniform(0.05, 1):.4f}",
                     "domain": f"d{i % 7}", "design": designs[i % 2]}
            fh.write(",".join(cells[c] for c in columns) + "\n")


def run_once(csv: Path) -> tuple[float, float, int]:
    """Wall seconds, peak RSS of the child in MB, exit status."""
    script = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
              f"r = subprocess.run([{str(Path(sys.executable).parent / 'metaeval')!r}, 'validate', '--csv', {str(csv)!r}], "
              "stdout=subprocess.DEVNULL); "
              "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, r.returncode)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), float(out[1]), int(out[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--columns", default="study,yi,sei")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "million.csv"
        write_csv(csv, args.rows, args.columns.split(","))
        print(f"{args.rows:,} rows, {csv.stat().st_size / 1e6:.1f} MB, columns {args.columns}; load {os.getloadavg()[0]:.2f}")
        walls, peaks = [], []
        for _ in range(args.repeats):
            wall, peak, status = run_once(csv)
            print(f"  {wall:6.1f} s  {peak:7.0f} MB  exit {status}")
            walls.append(wall)
            peaks.append(peak)
        print(f"median {statistics.median(walls):.1f} s, {statistics.median(peaks):.0f} MB peak "
              f"(targets: under 15 s and 1,000 MB); {time.strftime('%Y-%m-%d')}")


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
