"""Time the exact engine on 1,000 simulated studies (target: <= 50 ms per posterior).

Run: .venv/bin/python bench/bench_exact.py [--studies 1000] [--repeats 7]

Prints the median wall time of ``exact_posterior`` (the tau grid and the conditional
moments of mu) and of ``exact_posterior(...).summary()`` (everything in the summary
JSON: moments, HDIs of mu, tau, theta_new and every study effect, pooling factors),
over several tau priors, with the median process CPU time of the latter (steadier when
other jobs share the machine; the load average is printed too). Warm-up calls come
first, so imports (scipy.stats) and first-call costs are left out of the medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

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


if __name__ == "__main__":
    main()
