"""Property-based tests: loaders never crash on arbitrary input; conversions round-trip."""

import math

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metaeval import effects
from metaeval.errors import InputError
from metaeval.evidence import read_evidence_base
from metaeval.evidence_csv import read_csv

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
positive = st.floats(1e-6, 1e6, allow_nan=False, allow_infinity=False)
share = st.floats(0.001, 0.999)
size = st.integers(2, 100_000)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(est=finite, se=positive, level=st.floats(0.5, 0.999))
def test_ci_round_trip(est, se, level):
    z = effects.z_crit(level)
    # absolute slack for the float rounding of est ± z·se when se is tiny next to est
    assert math.isclose(effects.se_from_ci(est - z * se, est + z * se, level), se, rel_tol=1e-6, abs_tol=1e-10 * max(1.0, abs(est)))


@FAST
@given(est=st.floats(1e-3, 1e3) | st.floats(-1e3, -1e-3), se=st.floats(1e-2, 1e2))
def test_p_value_round_trip(est, se):
    p = effects.p_from_z(est / se)
    if 1e-300 < p < 1:
        assert math.isclose(effects.se_from_p(est, p), se, rel_tol=1e-6)


@FAST
@given(d=finite, se=positive)
def test_chinn_round_trip(d, se):
    lor, lse = effects.smd_to_log_or(d, se)
    back, back_se = effects.log_or_to_smd(lor, lse)
    assert math.isclose(back, d, rel_tol=1e-9, abs_tol=1e-9) and math.isclose(back_se, se, rel_tol=1e-9)


@FAST
@given(p1=share, p2=share, n1=size, n2=size)
def test_risk_difference_is_antisymmetric(p1, p2, n1, n2):
    rd, se = effects.risk_difference(p1, n1, p2, n2)
    rd2, se2 = effects.risk_difference(p2, n2, p1, n1)
    assert math.isclose(rd, -rd2, abs_tol=1e-12) and math.isclose(se, se2, rel_tol=1e-12)


@FAST
@given(p1=share, p2=share, n1=size, n2=size)
def test_log_odds_ratio_is_antisymmetric(p1, p2, n1, n2):
    lor, se = effects.log_odds_ratio(p1, n1, p2, n2)
    lor2, se2 = effects.log_odds_ratio(p2, n2, p1, n1)
    assert math.isclose(lor, -lor2, rel_tol=1e-9, abs_tol=1e-12) and math.isclose(se, se2, rel_tol=1e-9)


@FAST
@given(itt=finite, se=positive, take_up=st.floats(0.01, 1.0))
def test_bloom_scales_estimate_and_se_alike(itt, se, take_up):
    tot, tse = effects.bloom_tot(itt, se, take_up)
    assert math.isclose(tot * take_up, itt, rel_tol=1e-9, abs_tol=1e-9)
    assert math.isclose(tot / tse, itt / se, rel_tol=1e-9, abs_tol=1e-9)


@FAST
@given(text=st.text(max_size=300))
def test_csv_loader_never_crashes(tmp_path, text):
    path = tmp_path / "x.csv"
    path.write_text(text, encoding="utf-8")
    try:
        table = read_csv(path)
    except InputError as err:
        assert err.problems and all(str(path) in str(p) for p in err.problems)
    else:
        assert len(table) >= 1 and table["se"].gt(0).all()


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@FAST
@given(doc=st.dictionaries(
    st.sampled_from(["id", "name", "design", "estimates", "risk_of_bias", "source", "extra"]), yaml_values, max_size=7))
def test_project_loader_never_crashes(tmp_path, doc):
    data = tmp_path / "data"
    (data / "projects").mkdir(parents=True, exist_ok=True)
    (data / "domains.yaml").write_text("domains: []\n")
    (data / "projects" / "p.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True))
    try:
        read_evidence_base(data)
    except InputError as err:
        assert err.problems
    else:  # an empty domains list is itself an error, so nothing can pass
        raise AssertionError("an evidence base without domains was accepted")
