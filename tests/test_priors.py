"""Prior text: parsing, and log densities checked against scipy.stats as the independent reference."""

import numpy as np
import pytest
from scipy import stats

from metaeval.priors import PriorError, parse_assignment, parse_prior

X = np.array([-3.0, -0.5, 0.0, 1e-9, 0.3, 1.0, 2.5, 40.0])

REFERENCE = {
    "normal(0.5, 2)": stats.norm(0.5, 2).logpdf,
    "studentt(3, -1, 0.5)": stats.t(3, -1, 0.5).logpdf,
    "halfnormal(0.7)": stats.halfnorm(scale=0.7).logpdf,
    "halfcauchy(5)": stats.halfcauchy(scale=5).logpdf,
    "halfstudentt(4, 2)": lambda x: np.where(x >= 0, np.log(2) + stats.t(4, 0, 2).logpdf(x), -np.inf),
    "exponential(2)": stats.expon(scale=0.5).logpdf,
    "lognormal(-2, 0.5)": stats.lognorm(0.5, scale=np.exp(-2)).logpdf,
    "uniform(0, 3)": stats.uniform(0, 3).logpdf,
}


@pytest.mark.parametrize("text", sorted(REFERENCE))
def test_logpdf_matches_scipy_stats(text):
    ours, ref = parse_prior(text).logpdf(X), REFERENCE[text](X)
    finite = np.isfinite(ref)
    assert np.array_equal(np.isfinite(ours), finite)
    assert np.allclose(ours[finite], ref[finite], rtol=1e-10, atol=1e-12)


def test_scaling_a_prior_rescales_its_density():
    p = parse_prior("halfnormal(0.25)")
    q = p.scaled(4.0)
    assert str(q) == "halfnormal(1)"
    # a density on a metric 4x larger: q(4x) = p(x) / 4
    assert np.allclose(q.logpdf(4 * X[X >= 0]), p.logpdf(X[X >= 0]) - np.log(4))


def test_assignment_and_errors():
    name, prior = parse_assignment("tau.employment = halfcauchy(5)")
    assert name == "tau.employment" and prior.kwargs() == {"beta": 5.0}
    for bad in ("normal(0)", "gamma(1, 2)", "halfnormal(-1)", "uniform(2, 1)", "tau halfnormal(1)"):
        with pytest.raises(PriorError):
            parse_assignment(bad) if " " in bad else parse_prior(bad)
