"""Which initiative does more: pairwise probabilities, P(best) and ranks (metaeval.compare).

Checked against probabilities computed directly from the draws (loops, written out here), against
the closed form of a two-project normal–normal model with known tau (Gaussian algebra in
``_initiative_fixtures``), both on exact normal draws and on a real MCMC fit.
"""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).parent))
from _initiative_fixtures import known_tau_posterior, known_tau_posterior_exact  # noqa: E402

from metaeval.draws import DomainDraws  # noqa: E402
from metaeval.errors import InputError  # noqa: E402
from metaeval.ranking import compare, pairwise_probabilities, rank_draws  # noqa: E402


def _draws(theta: np.ndarray, projects, beneficial="increase", designs=None, domain="d") -> DomainDraws:
    theta = np.asarray(theta, dtype=float)
    shape = theta.shape[1:]
    return DomainDraws(domain=domain, label=domain.upper(), metric="pp", beneficial=beneficial, mid=2.0, scale=10.0, hdi_prob=0.95,
                       projects=tuple(projects), designs=tuple(designs or ["rct"] * len(projects)),
                       mu=np.zeros(shape), tau=np.ones(shape), theta=theta)


def test_core_matches_loops_over_draws():
    rng = np.random.default_rng(3)
    values = rng.normal(size=(4, 500)) + np.array([[0.0], [0.3], [0.1], [-0.2]])
    values[2, :7] = values[1, :7]  # some exact ties
    p = pairwise_probabilities(values)
    ranks = rank_draws(values)
    for i, j in itertools.product(range(4), repeat=2):
        want = sum(values[i, s] > values[j, s] for s in range(500)) / 500
        assert p[i, j] == pytest.approx(want, abs=1e-12)
    for s in range(500):
        assert sorted(ranks[:, s]) == [1, 2, 3, 4]  # a permutation, ties included
        for i in range(4):  # the rank is one more than the rows strictly above, ties to the row listed first
            above = sum(values[j, s] > values[i, s] or (values[j, s] == values[i, s] and j < i) for j in range(4))
            assert ranks[i, s] == 1 + above


def test_compare_agrees_with_the_draws_in_the_beneficial_direction():
    rng = np.random.default_rng(7)
    theta = rng.normal(size=(3, 4, 1000)) * 2 + np.array([-3.0, -1.0, 0.5])[:, None, None]
    result = compare({"d": _draws(theta, ["a", "b", "c"], beneficial="decrease")})
    dc = result.domains["d"]
    good = {p: -theta[i].ravel() for i, p in enumerate("abc")}  # lower is better here
    for a, b in itertools.permutations("abc", 2):
        assert dc.pairwise[a][b] == pytest.approx(np.mean(good[a] > good[b]), abs=1e-5)
        assert dc.pairwise[a][b] + dc.pairwise[b][a] == pytest.approx(1.0, abs=1e-5)  # no ties in continuous draws
    stack = np.vstack([good[p] for p in "abc"])
    best = np.bincount(np.argmax(stack, axis=0), minlength=3) / stack.shape[1]
    ranks = 1 + np.argsort(np.argsort(-stack, axis=0), axis=0)
    by = {r.project: r for r in dc.ranks}
    for i, p in enumerate("abc"):
        assert by[p].p_best == pytest.approx(best[i], abs=1e-5)
        assert by[p].expected_rank == pytest.approx(ranks[i].mean(), abs=1e-4)
        assert by[p].rank_sd == pytest.approx(ranks[i].std(ddof=1), rel=1e-4)
        assert sum(by[p].p_rank) == pytest.approx(1.0, abs=1e-5)
    assert sum(r.p_best for r in dc.ranks) == pytest.approx(1.0, abs=1e-5)
    assert [r.project for r in dc.ranks] == ["a", "b", "c"]  # a has the lowest (best) effects
    top = dc.differences[0]
    assert (top.a, top.b) == ("a", "c") and top.mean == pytest.approx(np.mean(good["a"] - good["c"]), rel=1e-4)
    assert top.hdi_low < top.mean < top.hdi_high
    assert dc.sentences[0].startswith("Most likely the best in D: a")


def test_the_closed_form_for_two_projects_with_known_tau():
    """Exact draws of the known-tau posterior: P(A better) is Φ(E[A − B] / SD(A − B)) within Monte Carlo error."""
    exact = known_tau_posterior_exact()
    rng = np.random.default_rng(11)
    x = rng.multivariate_normal(exact["mean"], exact["cov"], size=40_000)
    dc = compare({"all": _draws(x[:, 1:].T.reshape(2, 4, 10_000), ["A", "B"], domain="all")}).domains["all"]
    diff_mean = exact["mean"][1] - exact["mean"][2]
    diff_sd = math.sqrt(exact["cov"][1, 1] + exact["cov"][2, 2] - 2 * exact["cov"][1, 2])
    want = stats.norm.cdf(diff_mean / diff_sd)
    mcse = math.sqrt(want * (1 - want) / 40_000)
    assert abs(dc.pairwise["A"]["B"] - want) < 4 * mcse
    assert dc.ranks[0].p_best == pytest.approx(dc.pairwise["A"]["B"], abs=1e-5)  # two projects: best = better
    assert dc.ranks[0].expected_rank == pytest.approx(2 - dc.pairwise["A"]["B"], abs=1e-4)


@pytest.mark.mcmc
@pytest.mark.subprocess
@pytest.mark.slow
def test_a_real_fit_matches_the_closed_form_with_known_tau():
    """The MCMC fit of two studies with tau pinned at 0.2: compare() within 4 Monte Carlo SEs of the closed form."""
    import arviz as az
    import xarray as xr

    posterior = known_tau_posterior()
    dc = compare(posterior).domains["all"]
    exact = known_tau_posterior_exact()
    diff_sd = math.sqrt(exact["cov"][1, 1] + exact["cov"][2, 2] - 2 * exact["cov"][1, 2])
    want = stats.norm.cdf((exact["mean"][1] - exact["mean"][2]) / diff_sd)
    theta = posterior["posterior"]["theta_project"]
    better = (theta.isel(project=0) > theta.isel(project=1)).astype(float).transpose("chain", "draw")
    assert dc.pairwise["A"]["B"] == pytest.approx(float(better.mean()), abs=1e-5)  # the draws themselves
    mcse = float(az.mcse(xr.DataArray(better.values, dims=("chain", "draw")), method="mean"))
    assert abs(dc.pairwise["A"]["B"] - want) < 4 * mcse, (dc.pairwise["A"]["B"], want, mcse)


def test_the_order_is_checked_against_the_reference_model():
    rng = np.random.default_rng(5)
    base = rng.normal(size=(3, 4, 1000)) * 0.5 + np.array([1.0, 0.0, 0.02])[:, None, None]
    flipped = rng.normal(size=(3, 4, 1000)) * 0.5 + np.array([0.0, 1.0, 0.0])[:, None, None]  # a and b swap places
    dc = compare({"d": _draws(base, "abc")}, reference={"d": _draws(flipped, "abc")}).domains["d"]
    assert ("a", "b") in dc.flips
    assert ("b", "c") not in dc.flips and ("c", "b") not in dc.flips  # 50/50 either way is no flip
    text = " ".join(dc.sentences)
    assert "flips without the design-bias adjustment (no_bias" in text
    assert "Without the design-bias adjustment (no_bias) it would be b" in dc.sentences[0]
    pair = next(x for x in dc.differences if (x.a, x.b) == ("a", "b"))
    assert pair.p_a_better_reference == pytest.approx(np.mean(flipped[0].ravel() > flipped[1].ravel()), abs=1e-5)


def test_selection_and_bad_names():
    theta = np.random.default_rng(1).normal(size=(3, 4, 100))
    draws = {"d": _draws(theta, "abc"), "e": _draws(theta[:1], "a", domain="e")}
    result = compare(draws, projects=["a", "c"])
    assert result.domains["d"].projects == ("a", "c") and "e" in result.skipped
    with pytest.raises(InputError) as err:
        compare(draws, domain="nowhere")
    assert err.value.problems[0].field == "--domain" and "nowhere" in err.value.problems[0].message
    with pytest.raises(InputError) as err:
        compare(draws, projects=["a", "zz"])
    assert err.value.problems[0].field == "--projects" and "'zz'" in err.value.problems[0].message


def test_a_kept_comparison_is_the_comparison_and_is_found_again_only_for_the_same_inputs(tmp_path, monkeypatch):
    """A report made again from the same fit reads its comparison back (metaeval.kept): the same object as computed
    afresh; any other draws, reference, selection or names computes and keeps another; a damaged file is recomputed."""
    from metaeval import ranking

    rng = np.random.default_rng(21)
    theta = rng.normal(size=(3, 2, 400)) + np.array([0.0, 0.4, -0.3])[:, None, None]
    draws = {"d": _draws(theta, ["a", "b", "c"]), "e": _draws(-theta, ["a", "b", "c"], domain="e")}
    reference = {"d": _draws(theta[::-1], ["a", "b", "c"])}
    cache = tmp_path / "kept"
    computed = compare(draws, reference=reference, cache=cache)
    [kept] = cache.iterdir()
    assert computed == compare(draws, reference=reference)  # keeping it changes nothing in what is computed
    assert computed.domains["d"].ranks and computed.domains["d"].reference == "no_bias"

    calls = []
    real = ranking.compare_domain
    monkeypatch.setattr(ranking, "compare_domain", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = compare(draws, reference=reference, cache=cache)
    assert calls == [] and again == computed and again.to_json() == computed.to_json()  # read back, not computed
    nudged = {"d": _draws(theta + 1e-12, ["a", "b", "c"]), "e": draws["e"]}
    for other in (dict(source=nudged, reference=reference), dict(source=draws), dict(source=draws, reference=reference, domain="d"),
                  dict(source=draws, reference=reference, projects=["a", "b"]), dict(source=draws, reference=reference, names={"a": "A"})):
        compare(cache=cache, **other)
    assert len(calls) == 2 + 2 + 1 + 2 + 2 and len(list(cache.iterdir())) == 6  # each other input: computed and kept apart

    kept.write_text(kept.read_text()[:100])  # damaged: computed again and rewritten
    assert compare(draws, reference=reference, cache=cache) == computed and len(calls) == 11
    assert ranking.Comparison.model_validate_json(kept.read_bytes()) == computed
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert compare(draws, reference=reference, cache=blocker / "kept") == computed  # an unwritable folder: computed all the same
