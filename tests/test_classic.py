"""Tests of metaeval.classic against metafor (tests/reference/metafor_reference.json, made by
tests/reference/metafor_reference.R with metafor run to full convergence) and against closed-form results
that do not depend on metafor."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from metaeval.classic import METHODS, classic_by_domain, funnel_data, regtest, rma

REF_PATH = Path(__file__).parent / "reference" / "metafor_reference.json"
REF = json.loads(REF_PATH.read_text())
DATASETS = REF["datasets"]
RTOL = 1e-6


def _floors(dataset: str) -> dict[str, float]:
    """Absolute floors for quantities that are exactly or nearly zero, on each dataset's own scale (its
    smallest sampling variance, so one huge variance cannot loosen them)."""
    vmin = float(np.min(DATASETS[dataset]["vi"]))
    return {"loc": 1e-9 * math.sqrt(vmin), "tau2": 1e-9 * vmin, "pct": 1e-7, "stat": 1e-9, "p": 1e-12}


def _close(actual, expected, atol, what):
    np.testing.assert_allclose(np.asarray(actual, float), np.asarray(expected, float), rtol=RTOL, atol=atol,
                               err_msg=what)


def _fit_id(f):
    mods = "+".join(f["mods"]) if f["mods"] else ""
    return f"{f['dataset']}{'~' + mods if mods else ''}-{f['method']}-{f['test']}-{f['level']}"


def _mods_matrix(names):
    if not names:
        return None
    return pd.DataFrame({n: DATASETS["bcg"]["mods"][n] for n in names})


@pytest.fixture(autouse=True)
def _quiet_knha_fe_warning():
    # metafor warns that Knapp-Hartung is not meant for FE models and so do we; the reference grid uses it.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="the Knapp & Hartung method is not meant")
        yield


# ----------------------------------------------------------------------------------------------------------
# Agreement with metafor


def test_reference_covers_the_full_grid():
    grid = {(f["dataset"], f["method"], f["test"]) for f in REF["fits"] if f["level"] == 0.95}
    refused = {(f["dataset"], f["method"], f["test"]) for f in REF["not_converged"]}
    assert grid | refused == {(d, m, t) for d in ("bcg", "normand", "hackshaw", "schools", "raudenbush_huge", "wide")
                              for m in METHODS for t in ("z", "knha")}
    assert {d for d, _, _ in refused} <= {"wide"}  # only the extreme edge defeats metafor's Fisher scoring
    assert REF["meta"]["metafor_version"] and REF["meta"]["R_version"]


def test_one_uninformative_study_does_not_change_the_estimate():
    """A study with sei = 1e6 carries no weight: REML's tau^2 and mu are those without it (metafor: 0.0188, 0.0837),
    not 0 and 0.060 as when the stopping rules were scaled by the mean variance."""
    f = next(f for f in REF["fits"] if f["dataset"] == "raudenbush_huge" and f["method"] == "REML" and f["test"] == "z")
    ds = DATASETS["raudenbush_huge"]
    without = rma(ds["yi"][:-1], ds["vi"][:-1], method="REML")
    assert f["tau2"] == pytest.approx(0.01881829, rel=1e-6) and without.tau2 == pytest.approx(f["tau2"], rel=1e-6)
    assert rma(ds["yi"], ds["vi"], method="REML").tau2 == pytest.approx(f["tau2"], rel=1e-6)


@pytest.mark.parametrize("f", REF["not_converged"], ids=lambda f: f"{f['dataset']}-{f['method']}-{f['test']}")
def test_fits_metafor_cannot_complete_are_refused(f):
    ds = DATASETS[f["dataset"]]
    with pytest.raises(ValueError, match="did not converge"):
        rma(ds["yi"], ds["vi"], method=f["method"], test=f["test"])


@pytest.mark.parametrize("f", REF["fits"] + REF["metareg"], ids=_fit_id)
def test_matches_metafor(f):
    ds = DATASETS[f["dataset"]]
    fl = _floors(f["dataset"])
    res = rma(ds["yi"], ds["vi"], method=f["method"], test=f["test"], level=f["level"],
              mods=_mods_matrix(f["mods"]), slab=ds["slab"])
    assert (res.k, res.p) == (f["k"], f["p"])
    assert res.ddf == f["ddf"]
    for name in ("beta", "se", "ci_lb", "ci_ub"):
        _close(getattr(res, name), f[name], fl["loc"], name)
    _close(res.zval, f["zval"], fl["stat"], "zval")
    _close(res.pval, f["pval"], fl["p"], "pval")
    _close(res.tau2, f["tau2"], fl["tau2"], "tau2")
    _close(res.I2, f["I2"], fl["pct"], "I2")
    _close(res.H2, f["H2"], fl["stat"], "H2")
    _close(res.QE, f["QE"], fl["stat"], "QE")
    _close(res.QEp, f["QEp"], fl["p"], "QEp")
    _close(res.QM, f["QM"], fl["stat"], "QM")
    _close(res.QMp, f["QMp"], fl["p"], "QMp")
    assert [d for d in res.QMdf if d is not None] == np.atleast_1d(f["QMdf"]).tolist()

    pr = res.predict(np.array(f["newmods"]) if f.get("newmods") else None)
    for name in ("pred", "se", "ci_lb", "ci_ub"):
        _close(pr[name], f["predict"][name], fl["loc"], f"predict {name}")
    if f["predict"]["pi_lb"] is None:  # metafor gives no prediction interval for FE models
        assert res.is_fixed and "pi_lb" not in pr.columns
    else:
        _close(pr["pi_lb"], f["predict"]["pi_lb"], fl["loc"], "predict pi_lb")
        _close(pr["pi_ub"], f["predict"]["pi_ub"], fl["loc"], "predict pi_ub")

    bl = res.blup()
    assert list(bl.index) == ds["slab"]
    for name in ("pred", "se", "pi_lb", "pi_ub"):
        _close(bl[name], f["blup"][name], fl["loc"], f"blup {name}")


@pytest.mark.parametrize("f", REF["regtest"], ids=lambda f: f"{f['dataset']}-{f['method']}-{f['test']}")
def test_egger_regtest_matches_metafor(f):
    ds = DATASETS[f["dataset"]]
    fl = _floors(f["dataset"])
    res = regtest(rma(ds["yi"], ds["vi"], method=f["method"], test=f["test"]))
    _close(res.zval, f["zval"], fl["stat"], "zval")
    _close(res.pval, f["pval"], fl["p"], "pval")
    assert res.ddf == f["ddf"]
    _close([res.est, res.ci_lb, res.ci_ub], [f["est"], f["ci_lb"], f["ci_ub"]], fl["loc"], "limit estimate")
    _close(res.fit.beta, f["beta"], fl["loc"], "beta")
    _close(res.fit.se, f["se"], fl["loc"], "se")
    _close(res.fit.tau2, f["tau2"], fl["tau2"], "tau2")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("factor", [1e-3, 1e4])
def test_rescaled_data_rescale_the_estimates(method, factor):
    """The stopping rules are scale-free: BCG in other units gives metafor's answer in those units."""
    f = next(f for f in REF["fits"] if f["dataset"] == "bcg" and f["method"] == method and f["test"] == "z")
    ds = DATASETS["bcg"]
    res = rma(np.array(ds["yi"]) * factor, np.array(ds["vi"]) * factor**2, method=method)
    _close(res.tau2, np.array(f["tau2"]) * factor**2, 1e-9 * factor**2, "tau2")
    _close(res.beta, np.array(f["beta"]) * factor, 1e-9 * factor, "beta")
    _close(res.I2, f["I2"], 1e-7, "I2")


# ----------------------------------------------------------------------------------------------------------
# Closed-form checks that do not depend on metafor


def test_dersimonian_laird_two_studies_by_hand():
    # y = (0, 1), v = (0.1, 0.2): w = (10, 5), weighted mean 1/3, Q = 10/3, C = 15 - 125/15 = 20/3,
    # tau2 = (Q - 1)/C = 7/20; RE weights 20/9 and 20/11 give mu = 9/20 and se = sqrt(99)/20;
    # typical within-study variance (k-1)/C = 3/20, so I2 = 0.35/0.5 = 70% and H2 = Q/(k-1) = 10/3.
    res = rma([0.0, 1.0], [0.1, 0.2], method="DL")
    assert res.tau2 == pytest.approx(7 / 20, rel=1e-12)
    assert res.beta[0] == pytest.approx(9 / 20, rel=1e-12)
    assert res.se[0] == pytest.approx(math.sqrt(99) / 20, rel=1e-12)
    assert res.QE == pytest.approx(10 / 3, rel=1e-12)
    assert res.QEp == pytest.approx(stats.chi2.sf(10 / 3, 1), rel=1e-12)
    assert res.I2 == pytest.approx(70.0, rel=1e-12)
    assert res.H2 == pytest.approx(10 / 3, rel=1e-12)
    z = stats.norm.ppf(0.975)
    pr = res.predict().iloc[0]
    assert pr["ci_lb"] == pytest.approx(9 / 20 - z * math.sqrt(99) / 20, rel=1e-12)
    assert pr["pi_ub"] == pytest.approx(9 / 20 + z * math.sqrt(99 / 400 + 7 / 20), rel=1e-12)
    fe = rma([0.0, 1.0], [0.1, 0.2], method="FE")
    assert fe.tau2 == 0 and fe.beta[0] == pytest.approx(1 / 3, rel=1e-12)
    assert fe.I2 == pytest.approx(70.0, rel=1e-12)  # (Q - df)/Q


EQUAL_V_Y = np.array([0.3, -0.1, 0.8, 0.45, 1.2, 0.05, 0.6])
EQUAL_V = 0.04


def _equal_variance_tau2(method: str) -> float:
    """Each estimator's closed form when every study has the same sampling variance v."""
    k = EQUAL_V_Y.size
    s2 = np.var(EQUAL_V_Y, ddof=1)
    t0 = np.var(EQUAL_V_Y, ddof=0)
    return {
        "FE": 0.0,
        "DL": max(0.0, s2 - EQUAL_V),
        "REML": max(0.0, s2 - EQUAL_V),
        "PM": max(0.0, s2 - EQUAL_V),
        "EB": max(0.0, s2 - EQUAL_V),
        "ML": max(0.0, (k - 1) / k * s2 - EQUAL_V),
        "HS": max(0.0, (k - 1) / k * s2 - EQUAL_V),
        "SJ": t0 * s2 / (t0 + EQUAL_V),
    }[method]


@pytest.mark.parametrize("method", METHODS)
def test_equal_variances_closed_forms(method):
    vi = np.full(EQUAL_V_Y.size, EQUAL_V)
    res = rma(EQUAL_V_Y, vi, method=method)
    expected = _equal_variance_tau2(method)
    assert expected > 0.05 or method == "FE"  # a case with clear heterogeneity
    assert res.tau2 == pytest.approx(expected, rel=1e-9)
    k = EQUAL_V_Y.size
    assert res.beta[0] == pytest.approx(EQUAL_V_Y.mean(), rel=1e-12)
    assert res.se[0] == pytest.approx(math.sqrt((EQUAL_V + expected) / k), rel=1e-9)


@pytest.mark.parametrize("method", ["DL", "REML", "PM", "ML", "SJ"])
def test_knapp_hartung_with_equal_variances_is_the_t_interval(method):
    """With equal vi, KH inference on the mean is the one-sample t interval, whatever tau2 is."""
    vi = np.full(EQUAL_V_Y.size, EQUAL_V)
    res = rma(EQUAL_V_Y, vi, method=method, test="knha", level=0.9)
    ref = stats.ttest_1samp(EQUAL_V_Y, 0.0)
    ci = ref.confidence_interval(0.9)
    assert res.ddf == EQUAL_V_Y.size - 1
    assert res.zval[0] == pytest.approx(ref.statistic, rel=1e-10)
    assert res.pval[0] == pytest.approx(ref.pvalue, rel=1e-10)
    assert (res.ci_lb[0], res.ci_ub[0]) == pytest.approx((ci.low, ci.high), rel=1e-10)


def test_metaregression_equal_variances_is_ordinary_least_squares():
    rng = np.random.default_rng(1)
    x1, x2 = rng.normal(size=12), rng.uniform(size=12)
    y = 0.2 + 0.5 * x1 - 0.3 * x2 + rng.normal(scale=0.4, size=12)
    X = np.column_stack([np.ones(12), x1, x2])
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ coef
    ols_cov = resid @ resid / (12 - 3) * np.linalg.inv(X.T @ X)
    res = rma(y, np.full(12, 0.05), mods=np.column_stack([x1, x2]), method="REML", test="knha")
    assert res.coef_names == ("intrcpt", "mod1", "mod2")
    np.testing.assert_allclose(res.beta, coef, rtol=1e-10)
    np.testing.assert_allclose(res.se, np.sqrt(np.diag(ols_cov)), rtol=1e-9)
    # Omnibus F test of both slopes equals the OLS F test against the intercept-only model.
    rss0 = np.sum((y - y.mean()) ** 2)
    F = ((rss0 - resid @ resid) / 2) / (resid @ resid / 9)
    assert res.QM == pytest.approx(F, rel=1e-9)
    assert res.QMdf == (2, 9)
    assert res.QMp == pytest.approx(stats.f.sf(F, 2, 9), rel=1e-9)


def test_fixed_effect_egger_with_knha_is_classical_egger_regression():
    """Egger et al. (1997): OLS of yi/sei on 1/sei; its intercept t test is metafor's FE + knha regtest."""
    ds = DATASETS["hackshaw"]
    yi, sei = np.array(ds["yi"]), np.sqrt(ds["vi"])
    lr = stats.linregress(1 / sei, yi / sei)
    t_egger = lr.intercept / lr.intercept_stderr
    res = regtest(rma(yi, sei=sei, method="FE", test="knha"))
    assert res.zval == pytest.approx(t_egger, rel=1e-9)
    assert res.pval == pytest.approx(2 * stats.t.sf(abs(t_egger), yi.size - 2), rel=1e-9)
    assert res.est == pytest.approx(lr.slope, rel=1e-9)  # the limit estimate is Egger's slope


def test_blups_shrink_towards_the_mean_by_the_reliability():
    ds = DATASETS["bcg"]
    res = rma(ds["yi"], ds["vi"], method="REML")
    bl = res.blup()
    lam = res.tau2 / (res.tau2 + np.array(ds["vi"]))
    shrink = (bl["pred"].to_numpy() - res.beta[0]) / (np.array(ds["yi"]) - res.beta[0])
    np.testing.assert_allclose(shrink, lam, rtol=1e-10)
    fe = rma(ds["yi"], ds["vi"], method="FE").blup()
    np.testing.assert_allclose(fe["pred"], np.full(13, rma(ds["yi"], ds["vi"], method="FE").beta[0]))


# ----------------------------------------------------------------------------------------------------------
# Funnel plot data


def test_funnel_lines_hold_the_nominal_share_of_a_normal_around_the_estimate():
    ds = DATASETS["bcg"]
    res = rma(ds["yi"], ds["vi"], method="REML")
    fd = funnel_data(res, level=0.9, n_points=50)
    np.testing.assert_array_equal(fd.points["yi"], ds["yi"])
    np.testing.assert_allclose(fd.points["sei"], np.sqrt(ds["vi"]), rtol=1e-15)
    assert fd.refline == res.beta[0]
    lines = fd.lines
    assert lines["sei"].iloc[0] == 0 and lines["sei"].iloc[-1] == pytest.approx(1.1 * np.sqrt(max(ds["vi"])))
    inner = lines.iloc[1:]
    mass = (stats.norm.cdf(inner["ci_ub"], fd.refline, inner["sei"])
            - stats.norm.cdf(inner["ci_lb"], fd.refline, inner["sei"]))
    np.testing.assert_allclose(mass, 0.9, rtol=1e-12)
    wide = funnel_data(res, addtau2=True).lines
    half = (wide["ci_ub"] - wide["ci_lb"]) / 2
    np.testing.assert_allclose(half, stats.norm.ppf(0.975) * np.sqrt(wide["sei"] ** 2 + res.tau2), rtol=1e-12)
    with pytest.raises(ValueError, match="without moderators"):
        funnel_data(rma(ds["yi"], ds["vi"], mods=_mods_matrix(["ablat"])))


# ----------------------------------------------------------------------------------------------------------
# Output


def test_to_dict_is_plain_json_and_matches_the_fit():
    ds = DATASETS["bcg"]
    res = rma(ds["yi"], ds["vi"], method="REML", test="knha")
    d = json.loads(json.dumps(res.to_dict()))
    assert d["coefficients"]["intrcpt"]["estimate"] == res.beta[0]
    assert d["tau2"] == res.tau2 and d["tau"] == math.sqrt(res.tau2)
    assert d["ddf"] == 12 and d["QMdf"] == [1, 12]
    assert d["prediction"]["pi_lb"] == res.predict()["pi_lb"].iloc[0]
    fe = json.loads(json.dumps(rma(ds["yi"], ds["vi"], method="FE").to_dict()))
    assert fe["tau2"] == 0 and fe["prediction"]["pi_lb"] is None and fe["model"] == "fixed"


def test_printout_has_metafor_layout_and_numbers():
    ds = DATASETS["bcg"]
    text = str(rma(ds["yi"], ds["vi"], method="REML"))
    assert text.startswith("Random-Effects Model (k = 13; tau^2 estimator: REML)")
    assert "tau^2 (estimated amount of total heterogeneity): 0.3132" in text
    assert "Q(df = 12) = 152.2330, p-val < .0001" in text
    assert "-0.7145" in text and "-1.0669" in text and "-0.3622" in text
    mr = str(rma(ds["yi"], ds["vi"], mods=_mods_matrix(["ablat"]), test="knha"))
    assert mr.startswith("Mixed-Effects Model (k = 13; tau^2 estimator: REML)")
    assert "Test of Moderators (coefficient 2):" in mr and "F(df1 = 1, df2 = 11)" in mr
    assert "ablat" in mr and "tval" in mr


# ----------------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"yi": [0.1, np.nan, 0.3], "vi": [0.1, 0.1, 0.1]}, "yi has NaN"),
        ({"yi": [0.1, 0.2, 0.3], "vi": [0.1, np.inf, 0.1]}, "vi has NaN or infinite"),
        ({"yi": [0.1, 0.2, 0.3], "vi": [0.1, 0.0, 0.1]}, "vi must be positive"),
        ({"yi": [0.1, 0.2, 0.3], "vi": [0.1, -0.2, 0.1]}, r"non-positive at position\(s\) \[1\]"),
        ({"yi": [0.1, 0.2, 0.3], "sei": [0.1, 0.0, 0.1]}, "sei must be positive"),
        ({"yi": [0.1, 0.2, 0.3], "vi": [0.1, 0.1]}, "yi has 3 values but vi has 2"),
        ({"yi": pd.Series([0.1, None, 0.3], dtype="Float64"), "vi": [0.1] * 3}, r"yi has NaN .* \[1\]"),
        ({"yi": [0.1, 0.2], "vi": [0.1, 0.1], "sei": [0.3, 0.3]}, "exactly one of vi"),
        ({"yi": [0.1, 0.2]}, "exactly one of vi"),
        ({"yi": [0.1], "vi": [0.1]}, "needs at least 2 studies; got 1"),
        ({"yi": [], "vi": []}, "no studies"),
        ({"yi": ["a", "b"], "vi": [0.1, 0.1]}, "yi must be numeric"),
        ({"yi": [0.1, 0.2], "vi": [0.1, 0.1], "method": "XYZ"}, "unknown method"),
        ({"yi": [0.1, 0.2], "vi": [0.1, 0.1], "test": "t"}, "unknown test"),
        ({"yi": [0.1, 0.2], "vi": [0.1, 0.1], "level": 95}, "level must be a probability"),
        ({"yi": [0.1, 0.2, 0.3], "vi": [0.1] * 3, "mods": [[1.0], [1.0], [1.0]]}, "not of full rank"),
        ({"yi": [0.1, 0.2, 0.3], "vi": [0.1] * 3, "mods": [[1.0], [np.nan], [2.0]]}, "mods has NaN"),
        ({"yi": [0.1, 0.2, 0.3], "vi": [0.1] * 3, "mods": [[1.0], [2.0]]}, "mods has 2 rows"),
        ({"yi": [0.1, 0.2], "vi": [0.1] * 2, "mods": [[1.0], [2.0]]}, "more studies than coefficients"),
        ({"yi": [0.1], "vi": [0.1], "method": "FE", "test": "knha"}, "Knapp-Hartung inference needs"),
        ({"yi": [0.1, 0.2], "vi": [0.1, 0.1], "slab": ["a"]}, "slab has 1 labels"),
        ({"yi": [0.1, 0.2], "vi": [0.1, 0.1], "control": {"tol": 1}}, "unknown control"),
    ],
)
def test_bad_input_raises_clear_value_error(kwargs, message):
    kwargs = dict(kwargs)
    yi = kwargs.pop("yi")
    with pytest.raises(ValueError, match=message):
        rma(yi, **kwargs)


def test_single_study_fixed_effect_is_the_study_itself():
    res = rma([0.4], sei=[0.2], method="FE")
    assert res.beta[0] == pytest.approx(0.4, rel=1e-14) and res.se[0] == pytest.approx(0.2, rel=1e-14)
    assert (res.QE, res.QEp, res.I2, res.H2) == (0.0, 1.0, 0.0, 1.0)


def test_knha_with_identical_estimates_refuses_a_zero_standard_error():
    with pytest.raises(ValueError, match="residual sum of squares is zero"):
        rma([0.3, 0.3, 0.3], [0.1, 0.2, 0.3], method="DL", test="knha")


def test_non_convergence_raises_instead_of_returning_a_number():
    ds = DATASETS["hackshaw"]
    with pytest.raises(ValueError, match="did not converge in 1 iterations"):
        rma(ds["yi"], ds["vi"], method="REML", control={"maxiter": 1})


def test_regtest_needs_varying_standard_errors():
    with pytest.raises(ValueError, match="full rank after adding sei"):
        regtest(rma([0.1, 0.5, 0.2, 0.9], [0.1] * 4))


# ----------------------------------------------------------------------------------------------------------
# Per-domain table


def _evidence():
    bcg, schools = DATASETS["bcg"], DATASETS["schools"]
    rows = [{"domain": "bcg", "estimate_id": f"bcg{i}", "yi": y, "sei": math.sqrt(v), "poolable": True}
            for i, (y, v) in enumerate(zip(bcg["yi"], bcg["vi"]))]
    rows.insert(3, {"domain": "bcg", "estimate_id": "bcg_excluded", "yi": 50.0, "sei": 0.01, "poolable": False})
    rows.append({"domain": "bcg", "estimate_id": "bcg_nan", "yi": np.nan, "sei": 0.2, "poolable": True})
    rows += [{"domain": "schools", "estimate_id": f"s{i}", "yi": y, "sei": math.sqrt(v), "poolable": True}
             for i, (y, v) in enumerate(zip(schools["yi"], schools["vi"]))]
    rows.append({"domain": "single", "estimate_id": "only", "yi": 0.2, "sei": 0.1, "poolable": True})
    rows.append({"domain": "single", "estimate_id": "nose", "yi": 0.1, "sei": np.nan, "poolable": True})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("test", ["z", "knha"])
def test_classic_by_domain_matches_metafor_and_explains_skipped_domains(test):
    out = classic_by_domain(_evidence(), method="REML", test=test)
    assert list(out["domain"]) == ["bcg", "schools", "single"]
    out = out.set_index("domain")
    for dom in ("bcg", "schools"):
        f = next(f for f in REF["fits"] if f["dataset"] == dom and f["method"] == "REML"
                 and f["test"] == test and f["level"] == 0.95)
        fl = _floors(dom)
        row = out.loc[dom]
        assert row["k"] == f["k"]
        _close(row["estimate"], f["beta"], fl["loc"], "estimate")
        _close([row["ci_lb"], row["ci_ub"]], [f["ci_lb"], f["ci_ub"]], fl["loc"], "ci")
        _close([row["pi_lb"], row["pi_ub"]], [f["predict"]["pi_lb"], f["predict"]["pi_ub"]], fl["loc"], "pi")
        _close(row["tau2"], f["tau2"], fl["tau2"], "tau2")
        _close(row["I2"], f["I2"], fl["pct"], "I2")
        assert row["note"] == ""
    single = out.loc["single"]
    assert single["k"] == 1 and "1 usable estimate" in single["note"] and "at least 2" in single["note"]
    assert math.isnan(single["estimate"]) and math.isnan(single["tau2"])


def test_classic_by_domain_fixed_effect_pools_a_single_study_and_checks_columns():
    out = classic_by_domain(_evidence(), method="FE").set_index("domain")
    assert out.loc["single", "estimate"] == pytest.approx(0.2)
    assert "no prediction interval" in out.loc["single", "note"]
    with pytest.raises(ValueError, match="lacks column"):
        classic_by_domain(_evidence().drop(columns="poolable"))
