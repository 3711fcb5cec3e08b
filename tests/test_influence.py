"""Leave-it-out shifts (metaeval.influence): the integrated likelihood against quadrature, the shift against a closed form.

- ``project_loglik`` integrates a project's effect and design bias out of the likelihood of its data
  (closed forms for estimates and one finding, Gauss–Hermite for several). Checked against
  ``scipy.integrate.quad`` of the same likelihood written out here, on a layout with estimates,
  replicated estimates (omega), bias terms and direction-only findings, and random parameter draws.
- ``leave_out`` on the known-tau MCMC fit: the pooled mean without a study against the exact
  posterior of the other study alone.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

sys.path.insert(0, str(Path(__file__).parent))
from _initiative_fixtures import known_tau_posterior, known_tau_posterior_exact  # noqa: E402
from _model_fixtures import bundled_like  # noqa: E402

from metaeval.influence import leave_out, project_loglik  # noqa: E402


def _fake_posterior(seed: int = 0):
    """A posterior-shaped DataTree for the bundled-like layout (plus a numeric estimate beside a finding), random draws."""
    import xarray as xr

    from metaeval.model import prepare
    from metaeval.spec import load_spec

    table = bundled_like()
    extra = table[table.estimate_id == "drc:employment"].copy()
    for column, value in {"estimate_id": "vive:employment_number", "project_id": "vive_social_support",
                          "design": "matched_register", "yi": 4.0, "sei": 2.0}.items():
        extra[column] = value
    second = table[table.estimate_id == "vive:employment"].copy()  # a second finding in the same cell: quadrature
    second["estimate_id"], second["significant"] = "vive:employment_second", False
    table = pd.concat([table, extra, second], ignore_index=True)
    spec = load_spec("default")
    layout = prepare(table, spec)
    rng = np.random.default_rng(seed)
    chains, draws = 2, 3
    dims = ("chain", "draw")

    def var(dim, labels, scale=1.0, positive=False):
        x = rng.normal(size=(chains, draws, len(labels))) * scale
        return xr.DataArray(np.abs(x) + 0.05 if positive else x, dims=(*dims, dim), coords={dim: labels})

    post = xr.Dataset({
        "mu": var("domain", [d["id"] for d in layout.domains], 3.0),
        "tau": var("domain", [d["id"] for d in layout.domains], 2.0, positive=True),
        "theta_project": var("project", [p["label"] for p in layout.projects], 3.0),
        "bias": var("bias_term", [t["label"] for t in layout.bias_terms], 1.0),
        "omega": var("omega_domain", layout.omega_domains, 1.0, positive=True),
        # findings' SEs from half to twice the spread of the effect they measure (the bundled fit's are about half)
        "se_finding": xr.DataArray(rng.uniform(0.5, 2.0, size=(chains, draws, len(layout.findings))) * 3.0, dims=(*dims, "finding"),
                                   coords={"finding": [f["estimate_id"] for f in layout.findings]}),
    })
    tree = xr.DataTree.from_dict({"posterior": post})
    tree.attrs["metaeval_layout"] = json.dumps(layout.to_dict())
    return tree, layout, post


def _brute(layout, post, d: str, project: str, c: int, s: int) -> float:
    """log ∫ p(the project's data | u) N(u; mu + m_b, sqrt(tau² + s_b²)) du, by adaptive quadrature (one draw)."""
    at = lambda name, dim, key: float(post[name].sel({dim: key}).values[c, s])  # noqa: E731
    mu, tau = at("mu", "domain", d), at("tau", "domain", d)
    rows = [r for r in layout.estimates + layout.findings if r["domain"] == d and r["project"] == project]
    terms = {r["bias_index"] for r in rows if r["bias_index"] >= 0}
    m_b = s_b = 0.0
    if terms:
        t = layout.bias_terms[terms.pop()]
        m_b, s_b = t["sign"] * t["mean"], t["sd"]
    omega = at("omega", "omega_domain", d) if d in layout.omega_domains else 0.0

    def likelihood(u):
        value = 1.0
        for r in rows:
            extra = omega**2 if r["replicate_index"] >= 0 else 0.0
            if "yi" in r:
                value *= stats.norm.pdf(r["yi"], u, math.sqrt(r["sei"] ** 2 / r["weight"] + extra))
            else:
                se = at("se_finding", "finding", r["estimate_id"]) / math.sqrt(r["weight"])
                spread = math.sqrt(1 + extra / se**2)
                value *= stats.norm.cdf((r["z_high"] - u / se) / spread) - stats.norm.cdf((r["z_low"] - u / se) / spread)
        return value

    centre, sd = mu + m_b, math.sqrt(tau**2 + s_b**2)
    peaks = sorted({centre, *(r["yi"] for r in rows if "yi" in r)})
    lo, hi = min(peaks) - 12 * sd, max(peaks) + 12 * sd
    total, _ = integrate.quad(lambda u: likelihood(u) * stats.norm.pdf(u, centre, sd), lo, hi, points=peaks, limit=500,
                              epsabs=0, epsrel=1e-10)
    return math.log(total)


def test_integrated_likelihood_matches_quadrature():
    tree, layout, post = _fake_posterior()
    loglik, fallback = project_loglik(tree)
    assert not fallback  # one bias term per cell in this layout
    kinds = set()
    for (d, project), values in loglik.items():
        rows = [r for r in layout.estimates + layout.findings if r["domain"] == d and r["project"] == project]
        kinds.add(("estimates" if any("yi" in r for r in rows) else "") + ("+findings" if any("z_low" in r for r in rows) else ""))
        for c in range(2):
            for s in range(3):
                assert values[c, s] == pytest.approx(_brute(layout, post, d, project, c, s), abs=1e-5), (d, project, c, s)
    assert {"estimates", "+findings", "estimates+findings"} <= kinds
    assert max(sum("z_low" in r for r in layout.findings if (r["domain"], r["project"]) == key) for key in loglik) == 2


def test_only_project_and_fallback_are_said():
    tree, _, _ = _fake_posterior()
    shifts = leave_out(tree)
    lone = shifts["exam_grade"]["oto"]
    assert lone.shift is None and not lone.reliable and "only project" in lone.note
    several = shifts["employment"]
    assert set(several) == {"oto", "vive_social_support", "drc_sib", "cph_cfbu_outreach"}
    assert all(s.ess is not None and 1 <= s.ess <= 6 for s in several.values())  # 6 draws


@pytest.mark.mcmc
@pytest.mark.subprocess
@pytest.mark.slow
def test_leaving_a_study_out_of_the_known_tau_fit_matches_the_closed_form():
    posterior = known_tau_posterior()
    shifts = leave_out(posterior)["all"]
    mu = posterior["posterior"]["mu"].values.ravel()
    for study, _other in (("A", "B"), ("B", "A")):
        exact = known_tau_posterior_exact(drop=study)
        want_mean, want_sd = exact["mean"][0], math.sqrt(exact["cov"][0, 0])
        got = shifts[study]
        assert got.reliable and got.ess > 500
        assert got.mu_without == pytest.approx(want_mean, abs=4 * want_sd / math.sqrt(got.ess))
        assert got.shift == pytest.approx(want_mean - mu.mean(), abs=4 * want_sd / math.sqrt(got.ess))
        p = stats.norm.cdf(want_mean / want_sd)
        assert got.p_beneficial_without == pytest.approx(p, abs=4 * math.sqrt(p * (1 - p) / got.ess))
