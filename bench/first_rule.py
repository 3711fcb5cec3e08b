"""How accurately P(first) integrates over mu and the values: ``.venv/bin/python bench/first_rule.py [--cases 400] [--x-cases 200]`` (16 minutes; the
mu part is all but a minute of it).

P(a first) among four rows or more is, per component, an integral over mu of an integral over x
(:func:`metaeval.exact_level.first_of_independent`). How finely the rule over mu must go depends on how far
one SD of mu moves the rows against each other, in their own SDs (the relative loading): this measures, on
random mixtures (2 components, 4 to 100 rows, SDs up to 10 apart, loadings from 0.01 to about 10), the
largest error of Gauss-Hermite rules with 4 and 8 nodes and of :func:`~metaeval.exact_level.mu_rule` against
the trapezoid rule with 30 times finer steps, by loading. Then the rule over the values x (given mu): on
mixtures whose rows' SDs differ up to 30-fold (loadings below 0.1), the error of steps of 0.6 and 1 x the
narrowest SD against steps of 0.1, by the ratio of the largest to the smallest SD. Results go to
``bench/results/first-rule-<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import subprocess
from pathlib import Path

import numpy as np
from scaling import write_result

from metaeval.exact_level import first_of_independent, gauss_hermite, mu_rule, relative_loading

BINS = (0.1, 0.3, 1.0, 3.0, math.inf)


def trapezoid(h: float) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(-math.floor(8.5 / h), math.floor(8.5 / h) + 1) * h
    w = np.exp(-0.5 * t * t)
    return t, w / w.sum()


def case(rng: np.random.Generator) -> dict:
    rows, k = int(rng.choice([4, 6, 10, 30, 100])), 2
    sd = 0.05 * np.exp(rng.uniform(0, np.log(10), (k, rows)))
    m = rng.normal(0, rng.uniform(0.05, 0.5), (k, rows))
    slope = rng.uniform(0, 1, (k, rows))
    mu_var = 10 ** rng.uniform(-5, 0.5, k)
    c = slope * mu_var[:, None]
    v = sd**2 + slope * c
    args = (np.full(k, 1 / k), np.zeros(k), mu_var, m, v, c, 1.0)
    loading = relative_loading(slope, sd, np.sqrt(mu_var))
    reference = first_of_independent(*args, mu_nodes=trapezoid(0.01 / max(loading, 1.0)))
    errors = {name: float(np.abs(first_of_independent(*args, mu_nodes=nodes) - reference).max())
              for name, nodes in (("gauss_hermite_4", gauss_hermite(4)), ("gauss_hermite_8", gauss_hermite(8)),
                                  ("mu_rule", mu_rule(loading)))}
    return {"rows": rows, "loading": loading, "nodes": int(mu_rule(loading)[0].size), **errors}


def x_case(rng: np.random.Generator) -> dict:
    rows, k = int(rng.choice([4, 10, 30, 100])), 2
    sd = 0.05 * np.exp(rng.uniform(0, np.log(10 ** rng.uniform(0, 1.5)), (k, rows)))
    m = rng.normal(0, rng.uniform(0.05, 0.5), (k, rows))
    slope = rng.uniform(0, 1, (k, rows))
    mu_var = (0.05 / relative_loading(slope, sd, np.ones(k))) ** 2 * np.ones(k)  # loading 0.05: mu's rule is exact
    c = slope * mu_var[:, None]
    args = (np.full(k, 1 / k), np.zeros(k), mu_var, m, sd**2 + slope * c, c, 1.0)
    reference = first_of_independent(*args, x_step=0.1)
    return {"rows": rows, "sd_ratio": float((sd.max(1) / sd.min(1)).max()),
            **{f"x_step_{h:g}": float(np.abs(first_of_independent(*args, x_step=h) - reference).max()) for h in (0.6, 1.0)}}


def by_bins(cases: list[dict], key: str, bins: tuple, columns: tuple) -> list[dict]:
    table, lower = [], 0.0
    for upper in bins:
        inside = [c for c in cases if lower < c[key] <= upper]
        if inside:
            table.append({key: f"({lower:g}, {upper:g}]", "cases": len(inside), **{k: max(c[k] for c in inside) for k in columns}})
        lower = upper
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=400)
    parser.add_argument("--x-cases", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    cases = [case(rng) for _ in range(args.cases)]
    table = by_bins(cases, "loading", BINS, ("gauss_hermite_4", "gauss_hermite_8", "mu_rule", "nodes"))
    if table:
        print(f"{'loading':<12} {'cases':>5} {'GH 4':>9} {'GH 8':>9} {'mu_rule':>9} {'nodes':>6}  (largest |error| in P(first))")
    for r in table:
        print(f"{r['loading']:<12} {r['cases']:>5} {r['gauss_hermite_4']:9.1e} {r['gauss_hermite_8']:9.1e} {r['mu_rule']:9.1e} {r['nodes']:>6}")
    x_cases = [x_case(rng) for _ in range(args.x_cases)]
    x_table = by_bins(x_cases, "sd_ratio", (3.0, 10.0, math.inf), ("x_step_0.6", "x_step_1"))
    print(f"\n{'SD ratio':<12} {'cases':>5} {'x 0.6':>9} {'x 1':>9}  (largest |error| in P(first) against steps of 0.1 SD)")
    for r in x_table:
        print(f"{r['sd_ratio']:<12} {r['cases']:>5} {r['x_step_0.6']:9.1e} {r['x_step_1']:9.1e}")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True).stdout.strip()
    path = write_result(f"first-rule-{dt.date.today().isoformat()}",
                        {"settings": vars(args), "commit": commit, "by_loading": table, "by_sd_ratio": x_table, "cases": cases, "x_cases": x_cases})
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
