"""Inputs for the initiative tests (comparison, planning, costs, profiles, leave-it-out).

``known_tau_fit()``: one real MCMC fit (nutpie, through the command line) of the smallest case
with a closed form: two studies, the one-level normal–normal model (``no_bias``, no design
column), mu ~ Normal(0, 1) and tau pinned to 0.2 by a Uniform(0.1999, 0.2001) prior. Given tau,
everything is Gaussian, so the posterior of (mu, theta_A, theta_B) is known exactly
(:func:`known_tau_posterior`). Fitted once per test process into a temporary folder.

``normal_draws(result)``: per-domain draws shaped like a fit's, normal around a result's
summaries: for testing what is computed from draws (views, costs), not for statistics.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

import numpy as np

YI = {"A": 0.30, "B": 0.05}
SEI = {"A": 0.10, "B": 0.15}
TAU = 0.2
MU_SD = 1.0
PRIORS = ["--prior", "mu=normal(0, 1)", "--prior", "tau=uniform(0.1999, 0.2001)"]
DRAWS = 2000


@cache
def known_tau_fit() -> dict:
    """The fit's folder, CSV and command-line options; the posterior is read with :func:`known_tau_posterior_draws`."""
    folder = Path(tempfile.mkdtemp(prefix="metaeval-known-tau-"))
    atexit.register(shutil.rmtree, folder, True)
    csv = folder / "two.csv"
    csv.write_text("study,yi,sei\n" + "".join(f"{k},{YI[k]},{SEI[k]}\n" for k in YI), encoding="utf-8")
    options = ["--csv", str(csv), "--model", "no_bias", *PRIORS, "--out", str(folder / "out"), "--draws", str(DRAWS)]
    done = subprocess.run([sys.executable, "-m", "metaeval.cli", "fit", *options, "--format", "json"],
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr
    return {"folder": folder, "csv": csv, "options": options, "out": folder / "out"}


@cache
def known_tau_posterior():
    """The fitted posterior (DataTree) of :func:`known_tau_fit`."""
    from metaeval.draws import cached_posterior
    from metaeval.harmonise import load_evidence
    from metaeval.sampling import SamplerSettings
    from metaeval.spec import load_spec

    fit = known_tau_fit()
    spec = load_spec("no_bias", [PRIORS[1], PRIORS[3]])
    posterior = cached_posterior(load_evidence(csv=fit["csv"]), spec, out=fit["out"], settings=SamplerSettings(draws=DRAWS))
    assert posterior is not None
    return posterior


def known_tau_posterior_exact(drop: str | None = None) -> dict:
    """The exact posterior given tau = TAU: mean vector and covariance of (mu, theta_A, theta_B).

    Prior: mu ~ N(0, MU_SD²), theta_i = mu + u_i, u_i ~ N(0, TAU²); data y_i ~ N(theta_i, SEI_i²)
    (``drop``: leave that study's data out). Gaussian conditioning, written out independently of the package.
    """
    names = list(YI)
    prior_cov = np.full((3, 3), MU_SD**2)
    prior_cov[1:, 1:] += TAU**2 * np.eye(2)
    keep = [i for i, k in enumerate(names) if k != drop]
    h = np.zeros((len(keep), 3))  # y = H x + e
    for row, i in enumerate(keep):
        h[row, 1 + i] = 1.0
    r = np.diag([SEI[names[i]] ** 2 for i in keep])
    y = np.array([YI[names[i]] for i in keep])
    gain = prior_cov @ h.T @ np.linalg.inv(h @ prior_cov @ h.T + r)
    return {"mean": gain @ y, "cov": prior_cov - gain @ h @ prior_cov}


def normal_draws(result, n: int = 4000, seed: int = 1) -> dict:
    """Per-domain :class:`~metaeval.draws.DomainDraws` normal around ``result``'s summaries (shaped as 4 chains)."""
    from metaeval.draws import DomainDraws

    rng = np.random.default_rng(seed)
    out = {}
    for d, dom in result.domains.items():
        shape = (4, n // 4)
        projects = [p for p in dom.projects if p.mean is not None and p.sd]
        out[d] = DomainDraws(
            domain=d, label=dom.label, metric=dom.metric, beneficial=dom.beneficial, mid=dom.mid, scale=dom.scale,
            hdi_prob=dom.mu.hdi_prob, projects=tuple(p.key for p in projects), designs=tuple(p.design for p in projects),
            mu=dom.mu.mean + dom.mu.sd * rng.standard_normal(shape),
            tau=np.abs(dom.tau.mean + dom.tau.sd * rng.standard_normal(shape)),
            theta=np.stack([p.mean + p.sd * rng.standard_normal(shape) for p in projects]) if projects else np.zeros((0, *shape)),
            raw=tuple(p.raw for p in projects), raw_se=tuple(p.raw_se for p in projects),
        )
    return out
