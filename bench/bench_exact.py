"""Time the exact engine on 1,000 simulated studies (target: <= 50 ms per posterior), and the whole command.

Run: .venv/bin/python bench/bench_exact.py [--studies 1000] [--repeats 7]

Prints the median wall time of ``exact_posterior`` (the tau grid and the conditional
moments of mu) and of ``exact_posterior(...).summary()`` (everything in the summary
JSON: moments, HDIs of mu, tau, theta_new and every study effect, pooling factors),
over several tau priors, with the median process CPU time of the latter (steadier when
other jobs share the machine; the load average is printed too). Warm-up calls come
first, so imports (scipy.special) and first-call costs are left out of the medians.

Then the whole command in fresh processes (the target: "well under a second"):
``metaeval fit --engine exact --csv K.csv --format json --out TMP`` on a CSV of
``study,yi,sei`` (seed 1: sei ~ U(0.05, 0.5), yi ~ N(0.2, hypot(0.1, sei))), median,
min and max wall and CPU time of the runs after one warm-up run.

Whole command, 1,000 studies (2 cores; medians of fresh processes, min-max in brackets):

- commit 885b984, idle machine, 9 runs: 0.762 s (0.759-0.768).
- commit 7b2d770 (the exact path read the CSV as rows, then made one DataFrame): about 0.71 s idle.
  Imports were about 0.5 s of it, pandas 0.25 s (plus about 0.05 s of interpreter teardown);
  scipy.special 0.14 s (it imports scipy.linalg itself); numpy 0.07 s; pydantic and yaml 0.06 s.
- pandas off the path (the evidence as rows from ``evidence_records``, their digest and the
  exact engine on rows, summary.csv written with the csv module), idle, 9 runs each,
  back to back with 7b2d770, bytecode compiled for both: 0.479 s (0.476-0.487) against
  0.685 s (0.673-0.699) before. What is left: imports of numpy, scipy.special, pydantic and
  yaml (about 0.3 s) and about 0.13 s of work, of which the engine is 33 ms and rendering the
  indented JSON twice (stdout and summary.json; the standard library's encoder is pure
  Python when indenting) about 40 ms.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from metaeval.exact import exact_posterior
from metaeval.priors import parse_prior


def simulate(k: int, seed: int = 2026):
    """k studies: SEs from 0.05 to 0.5 SMD, true effects ~ Normal(0.1, 0.2)."""
    rng = np.random.default_rng(seed)
    sei = rng.uniform(0.05, 0.5, k)
    yi = rng.normal(0.1, 0.2, k) + rng.normal(0.0, sei)
    return yi, sei


def time_it(fn, repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``repeats`` calls after one warm-up call."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def command_csv(path: Path, k: int) -> Path:
    """The k-study CSV of the whole-command timing (the recipe in the docstring)."""
    rng = np.random.default_rng(1)
    sei = rng.uniform(0.05, 0.5, k)
    yi = rng.normal(0.2, np.hypot(0.1, sei))
    path.write_text("study,yi,sei\n" + "".join(f"s{i + 1},{y!r},{s!r}\n" for i, (y, s) in enumerate(zip(yi.tolist(), sei.tolist()))))
    return path


def time_command(k: int, repeats: int) -> dict[str, list[float]]:
    """Wall and CPU seconds of ``repeats`` fresh ``metaeval fit --engine exact`` processes after one warm-up run."""
    script = Path(sys.executable).with_name("metaeval")
    with tempfile.TemporaryDirectory() as tmp:
        csv = command_csv(Path(tmp) / f"k{k}.csv", k)
        cmd = [str(script), "fit", "--engine", "exact", "--csv", str(csv), "--format", "json", "--out", str(Path(tmp) / "out")]
        subprocess.run(cmd, check=True, capture_output=True, cwd=tmp)
        wall, cpu = [], []
        for _ in range(repeats):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, cwd=tmp)
            wall.append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per case (median reported; at least 5)")
    args = ap.parse_args()
    repeats = max(5, args.repeats)
    yi, sei = simulate(args.studies)
    mu_prior = parse_prior("normal(0, 1)")
    print(f"exact engine, {args.studies} simulated studies, median of {repeats} runs "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print(f"{'tau prior':<22}{'grid':>6}{'exact_posterior':>18}{'+ summary()':>14}{'(cpu)':>11}")
    for text in ("halfnormal(0.5)", "halfcauchy(0.5)", "exponential(2)", "lognormal(-2, 1)", "uniform(0, 2)"):
        prior = parse_prior(text)

        def posterior():
            return exact_posterior(yi, sei, tau_prior=prior, mu_prior=mu_prior)

        def summary():
            return posterior().summary()

        grid = len(posterior().tau)
        t_post, _ = time_it(posterior, repeats)
        t_sum, cpu_sum = time_it(summary, repeats)
        flag = "" if t_sum <= 0.050 else "  (over the 50 ms target)"
        print(f"{text:<22}{grid:>6}{t_post * 1e3:>15.1f} ms{t_sum * 1e3:>11.1f} ms{cpu_sum * 1e3:>8.1f} ms{flag}")

    times = time_command(args.studies, repeats)
    print(f"\nmetaeval fit --engine exact --csv ({args.studies} studies) --format json, {repeats} fresh processes "
          f"(load average {os.getloadavg()[0]:.1f})")
    for name, values in times.items():
        print(f"  {name:<5} median {statistics.median(values):.3f} s  min {min(values):.3f} s  max {max(values):.3f} s")


if __name__ == "__main__":
    main()
