"""The model with Gaussian effects integrated out (``effects = "marginal"``, models/marginal.toml).

Checked against independent references: its likelihood against the multivariate normal
density of the same estimates, its conditional draws of the integrated-out effects against
Gaussian conditioning done by matrix algebra, and its posterior against the sampled
(latent) model on the same evidence.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _model_fixtures import bundled_like, csv_like
from scipy import stats

from metaeval.errors import InputError
from metaeval.model import build_model, cell_groups, draw_marginal_effects, layout_of
from metaeval.spec import load_spec


def _table() -> pd.DataFrame:
    """One domain: a project with three estimates over two designs, one with two, one with one."""
    table = csv_like([0.30, 0.10, 0.45, 0.05, 0.20, 0.60], [0.10, 0.15, 0.20, 0.12, 0.08, 0.25],
                     studies=["a1", "a2", "a3", "b1", "b2", "c1"], domain="d")
    table["project_id"] = ["a", "a", "a", "b", "b", "c"]
    table["design"] = ["rct", "rct", "before_after", "rct", "rct", "comparison_group"]
    return table


def _moments(layout, mu: float, tau: float, omega: float):
    """Mean and covariance of the estimates with every effect integrated out, by construction."""
    est = layout.estimates
    n = len(est)
    mean = np.array([mu + (layout.bias_terms[e["bias_index"]]["sign"] * layout.bias_terms[e["bias_index"]]["mean"] if e["bias_index"] >= 0 else 0.0) for e in est])
    cov = np.zeros((n, n))
    for i, a in enumerate(est):
        for j, b in enumerate(est):
            cov[i, j] += tau**2 if a["project_index"] == b["project_index"] else 0.0
            if a["bias_index"] >= 0 and a["bias_index"] == b["bias_index"]:
                cov[i, j] += layout.bias_terms[a["bias_index"]]["sd"] ** 2
        cov[i, i] += a["sei"] ** 2 / a["weight"] + (omega**2 if a["replicate_index"] >= 0 else 0.0)
    return mean, cov


@pytest.mark.parametrize("mu, tau, omega", [(0.1, 0.2, 0.05), (0.4, 0.01, 0.3), (-0.2, 0.5, 0.001)])
def test_the_integrated_likelihood_is_the_multivariate_normal_density(mu, tau, omega):
    model = build_model(_table(), load_spec("marginal"))
    layout = layout_of(model)
    assert layout.omega_domains == ["d"] and len(layout.bias_terms) == 2
    (term,) = [p for p in model.potentials if p.name == "marginal_likelihood"]
    point = model.initial_point()
    point.update(mu=np.array([mu]), tau_log__=np.log([tau]), omega_log__=np.log([omega]))
    (term,) = model.replace_rvs_by_values([term.sum()])
    got = model.compile_fn(term, inputs=model.value_vars, on_unused_input="ignore")(point)
    mean, cov = _moments(layout, mu, tau, omega)
    want = stats.multivariate_normal(mean, cov).logpdf([e["yi"] for e in layout.estimates])
    assert float(got) == pytest.approx(want, rel=1e-10)
    assert "z_project" not in model.named_vars and "z_bias" not in model.named_vars  # nothing left to sample but mu, tau, omega


def test_conditional_draws_match_gaussian_conditioning():
    import xarray as xr

    spec = load_spec("marginal")
    layout = layout_of(build_model(_table(), spec))
    mu, tau, omega, n = 0.15, 0.2, 0.1, 20000
    post = xr.Dataset({name: (("chain", "draw", dim), np.full((2, n, 1), value)) for name, dim, value in
                       (("mu", "domain", mu), ("tau", "domain", tau), ("omega", "omega_domain", omega))})
    tree = draw_marginal_effects(xr.DataTree.from_dict({"posterior": post}), layout, spec, seed=3)["posterior"]
    # joint Gaussian of u = (theta per cell, bias per term) and the estimates, conditioned by matrix algebra
    est, cells, terms = layout.estimates, len(layout.projects), len(layout.bias_terms)
    prior_mean = np.r_[np.full(cells, mu), [t["sign"] * t["mean"] for t in layout.bias_terms]]
    prior_prec = np.diag(np.r_[np.full(cells, tau**-2), [t["sd"] ** -2 for t in layout.bias_terms]])
    design = np.zeros((len(est), cells + terms))
    for i, e in enumerate(est):
        design[i, e["project_index"]] = 1.0
        if e["bias_index"] >= 0:
            design[i, cells + e["bias_index"]] = 1.0
    noise_prec = np.diag([1 / (e["sei"] ** 2 + (omega**2 if e["replicate_index"] >= 0 else 0.0)) for e in est])
    cov = np.linalg.inv(prior_prec + design.T @ noise_prec @ design)
    mean = cov @ (prior_prec @ prior_mean + design.T @ noise_prec @ np.array([e["yi"] for e in est]))
    draws = np.concatenate([tree["theta_project"].values.reshape(-1, cells), tree["bias"].values.reshape(-1, terms)], axis=1)
    sd = np.sqrt(np.diag(cov))
    np.testing.assert_array_less(np.abs(draws.mean(axis=0) - mean), 4 * sd / np.sqrt(2 * n))
    np.testing.assert_allclose(draws.std(axis=0), sd, rtol=0.03)
    np.testing.assert_allclose(np.corrcoef(draws.T), cov / np.outer(sd, sd), atol=0.03)  # the joint, not just margins


def test_cells_with_a_direction_only_finding_stay_sampled():
    spec = load_spec("marginal")
    model = build_model(bundled_like(), spec)
    layout = layout_of(model)
    split = cell_groups(layout, spec)
    latent = {layout.projects[i]["label"] for i in split["latent"]}
    assert latent == {"employment/vive_social_support", "disability_pension/vive_social_support"}
    assert list(model.coords["latent_project"]) == sorted(latent)
    assert len(split["marginal"]) == len(layout.projects) - 2


@pytest.mark.mcmc
@pytest.mark.slow
def test_marginal_and_sampled_models_give_the_same_posterior():
    """Same model, two ways of computing it: domain means, SDs and project effects agree within Monte Carlo error."""
    import arviz as az

    from metaeval.sampling import fit

    table = bundled_like()
    fits = {name: fit(build_model(table, load_spec(name)), chains=4, draws=2000, seed=8, progress=False) for name in ("default", "marginal")}
    for var in ("mu", "tau", "theta_project"):
        a, b = (fits[n]["posterior"][var] for n in ("default", "marginal"))
        mcse = np.hypot(az.mcse(fits["default"]["posterior"].to_dataset()[[var]])[var].values, az.mcse(fits["marginal"]["posterior"].to_dataset()[[var]])[var].values)
        diff = np.abs(a.mean(("chain", "draw")).values - b.mean(("chain", "draw")).values)
        assert (diff < 4 * mcse + 1e-9).all(), (var, diff, mcse)
        np.testing.assert_allclose(a.std(("chain", "draw")).values, b.std(("chain", "draw")).values, rtol=0.1)


def test_marginal_effects_need_fixed_bias_priors(tmp_path):
    text = (tmp_path / "m.toml")
    base = open(load_spec("design_hierarchy").source, encoding="utf-8").read()
    text.write_text(base + '\n[effects]\nmode = "marginal"\n', encoding="utf-8")
    with pytest.raises(InputError, match="fixed bias priors"):
        load_spec(str(text))
    text.write_text(base + '\n[effects]\nmode = "integrated"\n', encoding="utf-8")
    with pytest.raises(InputError, match="expected one of latent, marginal"):
        load_spec(str(text))
