"""Wall time of the default sensitivity grid on the bundled evidence: 1 vs 2 local Dask workers.

Runs the scenarios of ``models/sensitivity.toml`` (no leave-one-out, no power-scaling,
no fit cache) once per worker count, in a fresh local cluster each time, and writes
``bench/sensitivity_results.json``: wall seconds, per-fit seconds, speed-up and scaling
efficiency (speed-up / workers), and whether the numbers were identical across runs.
The machine is shared (2 cores, other fits running): timings are noisy.

    .venv/bin/python bench/bench_sensitivity.py [--workers 1 2] [--draws 1000]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path


def main() -> None:
    from metaeval.files import write_atomic
    from metaeval.sensitivity import load_grid, run_sensitivity

    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("sensitivity_results.json"))
    args = ap.parse_args()
    grid = replace(load_grid(), leave_one_out=False, power_scaling=False)
    settings = {"chains": 4, "draws": args.draws, "tune": args.draws, "seed": 20261124}
    runs, values = [], []
    for n in args.workers:
        start = time.perf_counter()
        result = run_sensitivity(grid=grid, settings=settings, workers=n, progress=False)
        wall = time.perf_counter() - start
        values.append([r["value"] for r in result.results])
        runs.append({"workers": n, "wall_seconds": round(wall, 1), "fits": len(result.results),
                     "failed": sum(not r["ok"] for r in result.results),
                     "fit_seconds": [round(r["seconds"], 1) for r in result.results]})
        print(runs[-1])
    base = next((r for r in runs if r["workers"] == 1), None)
    for r in runs:
        if base:
            r["speedup"] = round(base["wall_seconds"] / r["wall_seconds"], 2)
            r["efficiency"] = round(r["speedup"] / r["workers"], 2)
    record = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": f"{platform.node()} ({len(__import__('os').sched_getaffinity(0))} cores, shared)",
              "grid": grid.source, "scenarios": len(grid.scenarios()), "settings": settings, "runs": runs,
              "identical_numbers_across_runs": all(v == values[0] for v in values),
              "note": "wall time includes starting the local cluster; each fit compiles its model in its worker (nutpie)."}
    write_atomic(args.out, json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
