"""A synthetic evidence base with known truth, as a metafor-style CSV for `metaeval fit --csv FILE`.

Why: the speed and scaling targets (bench/scaling.py) need evidence far larger than the
bundled base (up to 10,000 estimates, 1,000 projects, 10 domains) drawn from the
default model's own generative story, so a fit of it should pass the diagnostics
gate and its truth is known.

The CSV has the columns ``study, yi, sei, domain, design, project`` (the ones
``metaeval.evidence_csv.CSV_COLUMNS`` reads; ``vi`` is left out because ``sei`` is given).
Domains ``d01 ... dNN`` need not exist in ``data/domains.yaml``: a CSV domain is
taken as given on the ``yi`` scale with scale 1 and "increase" beneficial
(``metaeval.harmonise._csv_domain``), so the priors of ``models/default.toml``
apply unscaled and every bias term has sign +1.

Generative story (``metaeval/model.py``), per domain d: ``mu_d``, ``tau_d`` and
``omega_d`` drawn from the default model's priors. Each project has one design
(60% ``rct``, the rest spread evenly over the designs the model gives a bias
prior) and contributes to one to three domains; in each project-domain cell
``theta = mu_d + tau_d * z``, plus for weak designs one bias term drawn from that
design's bias prior, and each of the cell's estimates adds ``omega_d * z`` (only
where the cell has more than one estimate, as in the model). SEs follow from
per-arm sample sizes that vary by project (log-normal around 300) and by estimate,
``sei = sqrt(2 / n)``, roughly 0.01 to 0.3 on an SMD-like scale. Deterministic for
a seed.

Run:  .venv/bin/python bench/synthetic.py --estimates 10000 --projects 1000 --domains 10 --seed 1 -o FILE [--truth TRUTH.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from metaeval.spec import load_spec  # noqa: E402

RCT_SHARE = 0.6
DOMAINS_PER_PROJECT = (1, 2, 3)
DOMAINS_PER_PROJECT_PROB = (0.5, 0.3, 0.2)
TYPICAL_N_PER_ARM = 300.0


def draw_prior(prior, rng: np.random.Generator, size: int) -> np.ndarray:
    """``size`` draws from a metaeval Prior (PyMC parameterisation) with numpy's generator."""
    k = prior.kwargs()
    draws = {
        "normal": lambda: rng.normal(k["mu"], k["sigma"], size),
        "studentt": lambda: k["mu"] + k["sigma"] * rng.standard_t(k["nu"], size),
        "halfnormal": lambda: np.abs(rng.normal(0.0, k["sigma"], size)),
        "halfcauchy": lambda: np.abs(k["beta"] * rng.standard_cauchy(size)),
        "halfstudentt": lambda: np.abs(k["sigma"] * rng.standard_t(k["nu"], size)),
        "exponential": lambda: rng.exponential(1.0 / k["lam"], size),
        "lognormal": lambda: rng.lognormal(k["mu"], k["sigma"], size),
        "uniform": lambda: rng.uniform(k["lower"], k["upper"], size),
    }
    if prior.family not in draws:
        raise ValueError(f"cannot draw from an improper or unknown prior {prior}")
    return np.asarray(draws[prior.family](), dtype=float)


def _cells(n_estimates: int, n_projects: int, n_domains: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """(project, domain) cells: project i's first domain is i mod n_domains, so every domain has projects;
    extra domains are added while the estimates can still give every cell one."""
    cells = [(p, p % n_domains) for p in range(n_projects)]
    budget = n_estimates - n_projects
    wanted = rng.choice(DOMAINS_PER_PROJECT, size=n_projects, p=DOMAINS_PER_PROJECT_PROB)
    for p in range(n_projects):
        others = [d for d in range(n_domains) if d != p % n_domains]
        extra = min(int(wanted[p]) - 1, len(others), budget)
        cells += [(p, int(d)) for d in rng.choice(others, size=extra, replace=False)]
        budget -= extra
    return sorted(cells)


def simulate(n_estimates: int, n_projects: int, n_domains: int, seed: int, model: str = "default") -> tuple[list[dict], dict]:
    """CSV rows and the truth (per-domain mu, tau, omega; counts) for one synthetic evidence base."""
    if not 1 <= n_domains <= n_projects <= n_estimates:
        raise ValueError(f"need 1 <= domains <= projects <= estimates, got {n_domains}, {n_projects}, {n_estimates}")
    spec = load_spec(model)
    rng = np.random.default_rng(seed)
    domain_ids = [f"d{d + 1:0{max(2, len(str(n_domains)))}d}" for d in range(n_domains)]
    mu, tau, omega = (draw_prior(spec.priors[name], rng, n_domains) for name in ("mu", "tau", "omega"))

    weak = sorted(spec.bias_designs)
    design_names = ["rct", *weak]
    design_prob = [RCT_SHARE, *[(1 - RCT_SHARE) / len(weak)] * len(weak)] if weak else [1.0]
    designs = rng.choice(design_names, size=n_projects, p=design_prob)
    log_n = rng.normal(np.log(TYPICAL_N_PER_ARM), 0.8, n_projects)

    cells = _cells(n_estimates, n_projects, n_domains, rng)
    spread = rng.gamma(2.0, 1.0, len(cells))
    per_cell = 1 + rng.multinomial(n_estimates - len(cells), spread / spread.sum())

    rows = []
    for (p, d), n_k in zip(cells, per_cell):
        project, design = f"p{p + 1:0{len(str(n_projects))}d}", str(designs[p])
        effect = mu[d] + tau[d] * rng.standard_normal()
        if design in spec.bias_designs:
            mean, sd = spec.bias_designs[design].params
            effect += mean + sd * rng.standard_normal()
        residual = omega[d] * rng.standard_normal(n_k) if n_k > 1 else np.zeros(1)
        n_arm = np.clip(np.exp(log_n[p] + rng.normal(0.0, 0.3, n_k)), 20, 20000)
        sei = np.sqrt(2.0 / n_arm)
        yi = effect + residual + sei * rng.standard_normal(n_k)
        for k in range(n_k):
            rows.append(dict(study=f"{project}/{domain_ids[d]}/{k + 1}", yi=f"{yi[k]:.6g}", sei=f"{sei[k]:.6g}",
                             domain=domain_ids[d], design=design, project=project))
    truth = dict(
        seed=seed, model=model, n_estimates=len(rows), n_projects=n_projects, n_domains=n_domains, n_cells=len(cells),
        n_cells_replicated=int((per_cell > 1).sum()),
        designs={x: int((designs == x).sum()) for x in design_names},
        domains={domain_ids[d]: dict(mu=float(mu[d]), tau=float(tau[d]), omega=float(omega[d])) for d in range(n_domains)},
    )
    return rows, truth


def write_csv(path: Path | str, n_estimates: int, n_projects: int, n_domains: int, seed: int) -> dict:
    """Write the synthetic CSV to ``path`` and return its truth."""
    rows, truth = simulate(n_estimates, n_projects, n_domains, seed)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return truth


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--estimates", type=int, default=10000)
    parser.add_argument("--projects", type=int, default=1000)
    parser.add_argument("--domains", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("-o", "--output", type=Path, required=True, help="CSV file to write")
    parser.add_argument("--truth", type=Path, help="also write the true parameters as JSON here")
    args = parser.parse_args()
    truth = write_csv(args.output, args.estimates, args.projects, args.domains, args.seed)
    if args.truth:
        args.truth.write_text(json.dumps(truth, indent=2, sort_keys=True) + "\n")
    print(f"{args.output}: {truth['n_estimates']} estimates, {truth['n_projects']} projects, {truth['n_domains']} domains, "
          f"{truth['n_cells']} project-domain cells ({truth['n_cells_replicated']} with more than one estimate)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
