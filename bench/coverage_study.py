"""Coverage of the default model's intervals on simulated evidence with known truth.

Each replication draws a complete evidence base from the default model's own
generative story, shaped like the bundled evidence: four domains on different
metrics (SMD, percentage points, a decrease-beneficial domain, a one-project
domain); randomised and weak designs; a project with two estimates in a domain;
two findings reported only as direction and significance. Truth per replication:
domain means mu_d from the mu prior, between-project SDs tau_d from the tau
prior, project effects, design biases from the per-design bias priors, estimate
residuals, and the unknown SEs of the direction-only findings from the SE prior.
The evidence is then fitted with ``models/default.toml`` through the public API
(build_model -> fit -> summarise) and we count how often the 90% HDI of mu_d
contains the true mu_d. A correct implementation covers 90% on average
(Bayesian calibration, as in simulation-based calibration, Talts et al. 2018).

Run:  .venv/bin/python bench/coverage_study.py --reps 100   (about 10-20 s per replication)
Writes bench/coverage_results.json and prints a one-paragraph summary.

With ``--gate-seeds N`` it instead fits the bundled evidence (``--csv FILE``: a
metafor-style CSV) with the default model (``--model``, ``--target-accept``) under
N seeds and records how often the diagnostics gate passes (bench/gate_results.json).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from metaeval.model import build_model  # noqa: E402
from metaeval.sampling import diagnose, fit  # noqa: E402
from metaeval.spec import load_spec  # noqa: E402

# domain: (beneficial, scale, mid, [(project, design, n_estimates, direction_only), ...], relative SE)
DOMAINS = {
    "jobs": ("increase", 0.5, 0.1, [("rct_a", "rct", 2, False), ("rct_b", "rct", 1, False), ("register", "matched_register", 1, True),
                                     ("comparison", "comparison_group", 1, False), ("area", "area_comparison", 1, False)], 0.35),
    "support": ("increase", 10.0, 3.0, [("cohort", "before_after", 1, False), ("area", "area_comparison", 1, False), ("rct_a", "rct", 1, False)], 0.4),
    "pension": ("decrease", 10.0, 2.0, [("rct_a", "rct", 1, False), ("register", "matched_register", 1, True), ("comparison", "comparison_group", 1, False)], 0.35),
    "grades": ("increase", 1.0, 0.3, [("rct_a", "rct", 1, False)], 0.4),
}
HDI_PROB = 0.9


def _draw(prior, rng: np.random.Generator) -> float:
    """One draw from a metaeval Prior (the families the default model uses)."""
    k = prior.kwargs()
    if prior.family == "normal":
        return float(rng.normal(k["mu"], k["sigma"]))
    if prior.family == "halfnormal":
        return float(abs(rng.normal(0.0, k["sigma"])))
    if prior.family == "lognormal":
        return float(rng.lognormal(k["mu"], k["sigma"]))
    raise ValueError(f"no sampler for {prior.family}")


def simulate(spec, rng: np.random.Generator) -> tuple[pd.DataFrame, dict[str, float]]:
    """One evidence base from the default model's generative story, with every true parameter.

    Truth keys are named like the posterior variables: ``mu[d]``, ``tau[d]``,
    ``omega[d]`` (only where a project has > 1 estimate), ``bias[d/p]``.
    """
    rows, truth = [], {}
    z_crit = 1.959963984540054
    for domain, (beneficial, scale, mid, projects, rel_se) in DOMAINS.items():
        sign = 1.0 if beneficial == "increase" else -1.0
        mu = _draw(spec.priors["mu"].scaled(scale), rng)
        tau = _draw(spec.priors["tau"].scaled(scale), rng)
        omega = _draw(spec.priors["omega"].scaled(scale), rng)
        truth[f"mu[{domain}]"], truth[f"tau[{domain}]"] = mu, tau
        if any(n > 1 for _, _, n, _ in projects):
            truth[f"omega[{domain}]"] = omega
        for project, design, n_est, direction_only in projects:
            theta = mu + tau * rng.standard_normal()
            bias = 0.0
            if design != "rct":
                b = spec.bias_designs[design].scaled(scale)
                bias = sign * (b.params[0] + b.params[1] * rng.standard_normal())
                truth[f"bias[{domain}/{project}]"] = bias
            for k in range(n_est):
                effect = theta + (omega * rng.standard_normal() if n_est > 1 else 0.0) + bias
                row = {"estimate_id": f"{domain}:{project}:{k}", "project_id": project, "project_name": project, "domain": domain,
                       "design": design, "estimand": "itt", "outcome": domain, "poolable": True, "direction_only": False,
                       "direction": None, "significant": None, "sig_level": 0.05, "exclusion_reason": None,
                       "domain_label": domain, "domain_metric": "sim", "domain_beneficial": beneficial, "domain_mid": mid, "domain_scale": scale}
                if direction_only:
                    se = _draw(spec.direction_only_se.scaled(scale), rng)
                    z = (effect + se * rng.standard_normal()) / se
                    row.update(yi=math.nan, sei=math.nan, direction_only=True, direction="increase" if z > 0 else "decrease",
                               significant=bool(abs(z) > z_crit))
                else:
                    se = rel_se * scale * (0.6 + 0.8 * rng.random())
                    row.update(yi=effect + se * rng.standard_normal(), sei=se)
                rows.append(row)
    return pd.DataFrame(rows), truth


def gate_study(seeds: int, draws: int, model: str, out: Path, *, target_accept: float | None = None, csv: Path | None = None) -> int:
    """How often a fit of the bundled evidence (or of ``csv``) passes the diagnostics gate, seed after seed."""
    from metaeval.harmonise import evidence_frame, evidence_records, load_evidence

    spec = load_spec(model)
    target_accept = target_accept or spec.target_accept
    built = build_model(evidence_frame(evidence_records(csv=csv)) if csv else load_evidence(), spec)
    runs = []
    for seed in range(seeds):
        t0 = time.time()
        gate = diagnose(fit(built, seed=seed, draws=draws, target_accept=target_accept, progress=False))
        kept = ("passed", "rhat_max", "ess_bulk_min", "ess_tail_min", "divergences", "failures")
        runs.append({"seed": seed, "seconds": round(time.time() - t0, 1), **{k: gate[k] for k in kept}})
        print(f"seed {seed}: {'passed' if gate['passed'] else 'FAILED ' + '; '.join(gate['failures'])} "
              f"(R-hat {gate['rhat_max']:.4f}, ESS {gate['ess_bulk_min']:.0f}/{gate['ess_tail_min']:.0f}), {runs[-1]['seconds']} s", flush=True)
    result = {
        "what": f"diagnostics gate (R-hat <= 1.01, bulk/tail ESS >= 400, no divergences) on {csv.name if csv else 'the bundled evidence'}",
        "model": model, "target_accept": target_accept, "chains": 4, "draws": draws, "tune": 1000,
        "passed": sum(r["passed"] for r in runs), "seeds": seeds,
        "rhat_max": max(r["rhat_max"] for r in runs), "ess_bulk_min": min(r["ess_bulk_min"] for r in runs),
        "ess_tail_min": min(r["ess_tail_min"] for r in runs),
        "note": "the first seed compiles the model; later seeds reuse the compiled sampler, so their seconds are sampling and diagnostics",
        "runs": runs,
    }
    out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"gate passed in {result['passed']}/{seeds} seeds")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=20261124)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--gate-seeds", type=int, default=0, metavar="N", help="run the gate study on the bundled evidence instead")
    parser.add_argument("--model", default="default", help="model for the gate study (default: default)")
    parser.add_argument("--target-accept", type=float, default=None, help="the gate study's target_accept (default: the model's)")
    parser.add_argument("--csv", type=Path, default=None, help="the gate study's evidence: a metafor-style CSV (default: the bundled evidence)")
    args = parser.parse_args()
    if args.gate_seeds:
        return gate_study(args.gate_seeds, args.draws, args.model, args.out or Path(__file__).with_name("gate_results.json"),
                          target_accept=args.target_accept, csv=args.csv)
    args.out = args.out or Path(__file__).with_name("coverage_results.json")

    from metaeval.summary import summarise

    spec = load_spec("default")
    rng = np.random.default_rng(args.seed)
    records = []
    started = time.time()
    for rep in range(args.reps):
        evidence, truth = simulate(spec, rng)
        truth = {key[3:-1]: value for key, value in truth.items() if key.startswith("mu[")}
        t0 = time.time()
        posterior = fit(build_model(evidence, spec), draws=args.draws, tune=1000, chains=4, seed=args.seed + rep, progress=False)
        summary = summarise(posterior, hdi_prob=HDI_PROB)
        gate = diagnose(posterior)
        for domain, true_mu in truth.items():
            mu = summary.domains[domain].mu
            records.append({"rep": rep, "domain": domain, "truth": true_mu, "mean": mu.mean, "hdi_low": mu.hdi_low, "hdi_high": mu.hdi_high,
                            "covered": bool(mu.hdi_low <= true_mu <= mu.hdi_high)})
        records[-1]["_gate"] = {"passed": gate["passed"], "divergences": gate["divergences"], "rhat_max": gate["rhat_max"], "seconds": round(time.time() - t0, 1)}
        print(f"rep {rep + 1}/{args.reps}: coverage so far {np.mean([r['covered'] for r in records]):.3f} "
              f"({len(records)} intervals), gate {'passed' if gate['passed'] else 'FAILED'}, {time.time() - t0:.1f} s", flush=True)

    covered = np.array([r["covered"] for r in records])
    by_domain = {d: float(np.mean([r["covered"] for r in records if r["domain"] == d])) for d in DOMAINS}
    gates = [r["_gate"] for r in records if "_gate" in r]
    n = len(covered)
    result = {
        "what": "coverage of the default model's 90% HDI for each domain mean, truth drawn from the model's generative story",
        "model": "models/default.toml",
        "replications": args.reps,
        "intervals": n,
        "hdi_prob": HDI_PROB,
        "coverage": round(float(covered.mean()), 4),
        "coverage_mc_se": round(math.sqrt(0.9 * 0.1 / n), 4),
        "coverage_by_domain": {k: round(v, 4) for k, v in by_domain.items()},
        "gate_passed": sum(g["passed"] for g in gates),
        "fits_with_divergences": sum(g["divergences"] > 0 for g in gates),
        "seed": args.seed,
        "sampler": {"chains": 4, "draws": args.draws, "tune": 1000, "target_accept": spec.target_accept},
        "wall_seconds": round(time.time() - started),
        "records": [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items() if k != "_gate"} for r in records],
        "gates": gates,
    }
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"coverage of 90% HDIs for mu: {result['coverage']:.3f} over {n} intervals ({args.reps} replications; MC SE {result['coverage_mc_se']}); "
          f"by domain {result['coverage_by_domain']}; gate passed in {result['gate_passed']}/{args.reps} fits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
