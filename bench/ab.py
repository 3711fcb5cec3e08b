"""Before and after, in one run: `.venv/bin/python bench/ab.py --before REV [--runs 5] [--cases fit,report,summary]`.

A change's speed on a shared machine is best read as a ratio within one run: this times the commands
of ``bench/run.py`` in fresh processes with the code of revision ``REV`` (extracted with ``git archive``
and put first on ``PYTHONPATH``) and with the working tree, alternating the two so both see the same
load, and the naive PyMC baseline of ``bench/run.py`` once per round. Both use one compile cache, warmed
by an untimed fit of each, and their own output folder holding a fit of the bundled evidence. Each case
records the median wall and CPU seconds (user + system of the process) of either side, their ratios, and
the one-minute load average before each round; results go to ``bench/results/ab-<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import BASELINE
from scaling import revision, write_result

from metaeval.compile_cache import ENV_VAR

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "fit": ["fit", "--refit", "--format", "json"],  # fresh process, warm compile cache
    # the same with next to no sampling (2 chains x 50 + 50, gate off): what a fresh fit costs besides sampling
    "fit-short": ["fit", "--refit", "--format", "json", "--chains", "2", "--draws", "50", "--tune", "50", "--allow-failed-gate"],
    "report-first": ["report"],  # on the existing fit, the first time (the planning simulation it keeps in OUT/plans removed)
    "report": ["report"],  # on the existing fit, again
    "summary": ["summary"],
}


def _timed(cmd: list[str], env: dict, cwd: Path = ROOT) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the git revision to compare the working tree with")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    args = parser.parse_args()
    cases = args.cases.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="metaeval-ab-"))
    base = tmp / "before"
    base.mkdir()
    archive = subprocess.run(["git", "archive", args.before], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
    sides = {"before": base, "after": ROOT}  # each runs in its own tree: `python -m` puts the working folder first on sys.path
    envs = {side: {**os.environ, "PYTHONPATH": str(code), ENV_VAR: str(tmp / "compile-cache")} for side, code in sides.items()}
    command = {side: [sys.executable, "-m", "metaeval.cli"] for side in sides}
    for side, code in sides.items():  # the code each side runs, checked
        where = subprocess.run([sys.executable, "-c", "import metaeval; print(metaeval.__file__)"], env=envs[side], cwd=code,
                               check=True, capture_output=True, text=True).stdout.strip()
        assert Path(where).is_relative_to(code), f"{side} runs {where}, not the code in {code}"
    out = {side: ["--out", str(tmp / side)] for side in sides}
    for side in sides:  # warms the compile cache (and its index) and leaves a fit for report and summary, untimed
        subprocess.run(command[side] + CASES["fit"] + out[side], check=True, capture_output=True, env=envs[side], cwd=sides[side])
    out_short = {side: ["--out", str(tmp / f"{side}-short")] for side in sides}  # its fit must not replace the one reported on

    times: dict[str, dict[str, list[tuple[float, float]]]] = {case: {side: [] for side in sides} for case in cases}
    baseline: list[tuple[float, float]] = []
    loads = []
    for _ in range(args.runs):
        loads.append(round(os.getloadavg()[0], 2))
        baseline.append(_timed([sys.executable, "-c", BASELINE], dict(os.environ)))
        for case in cases:
            for side in sides:
                if case == "report-first":  # what a report keeps: OUT/kept (OUT/plans before 2026-12-01)
                    for kept in ("kept", "plans"):
                        shutil.rmtree(tmp / side / kept, ignore_errors=True)
                times[case][side].append(_timed(command[side] + CASES[case] + (out_short if case == "fit-short" else out)[side], envs[side], sides[side]))

    def medians(runs):
        return round(statistics.median(w for w, _ in runs), 3), round(statistics.median(c for _, c in runs), 3)

    base_wall, base_cpu = medians(baseline)
    rows = []
    print(f"baseline (naive PyMC eight schools): {base_wall:.2f} s wall, {base_cpu:.2f} CPU-s; load before each round: {loads}")
    print(f"{'case':<12} {'before wall':>11} {'after wall':>10} {'ratio':>6} {'before CPU':>10} {'after CPU':>9} {'ratio':>6} {'after/base':>10}")
    for case in cases:
        (bw, bc), (aw, ac) = medians(times[case]["before"]), medians(times[case]["after"])
        rows.append(dict(case=case, command=CASES[case], before_wall_s=bw, after_wall_s=aw, wall_ratio=round(aw / bw, 3),
                         before_cpu_s=bc, after_cpu_s=ac, cpu_ratio=round(ac / bc, 3), after_to_baseline=round(aw / base_wall, 3),
                         runs={side: [[round(w, 3), round(c, 3)] for w, c in times[case][side]] for side in sides}))
        print(f"{case:<12} {bw:11.2f} {aw:10.2f} {aw / bw:6.2f} {bc:10.2f} {ac:9.2f} {ac / bc:6.2f} {aw / base_wall:10.2f}")
    record = dict(date=dt.date.today().isoformat(), before=args.before, after=revision(), runs=args.runs, machine=dict(cpus=os.cpu_count()),
                  load_before_rounds=loads, load_after=os.getloadavg(), baseline=dict(wall_s=base_wall, cpu_s=base_cpu), cases=rows)
    dest = write_result(f"ab-{record['date']}", record)
    print(f"\nwritten: {dest.relative_to(ROOT)}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
