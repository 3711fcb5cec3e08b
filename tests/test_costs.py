"""Costs beside effects (data/costs.yaml, metaeval.costs): every figure traceable, bad files reported, the CEAC right.

- The bundled file: every quote is in its source document (whitespace normalised), every number
  recorded is printed in its quote, every price year is stated in the source, and every figure
  either computes a cost per person helped or says why not.
- A broken file: every problem at once, naming the file, the record and the field.
- The cost per person helped: persons helped per unit from the effect's share and the group
  sizes, and the acceptability curve against the closed form for normal cost and effect.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from metaeval.costs import CostFigure, acceptability, cost_effectiveness, load_costs
from metaeval.draws import DomainDraws
from metaeval.errors import InputError

DATA = Path(__file__).resolve().parents[1] / "data"


def normalise(text: str) -> str:
    return " ".join(text.split())


def _danish(x: float) -> list[str]:
    """How a number may be printed in the sources: 28.353, 28353, -119, 119 (a sign dropped by OCR), 3,5."""
    whole = f"{abs(x):,.0f}".replace(",", ".") if float(x).is_integer() else f"{abs(x):g}".replace(".", ",")
    return [whole, whole.replace(".", "")]


@pytest.fixture(scope="module")
def figures():
    return load_costs(DATA)


def test_the_bundled_costs_validate_against_the_evidence(figures):
    from metaeval.harmonise import load_evidence

    evidence = load_evidence(DATA)
    assert load_costs(DATA, projects=set(evidence["project_id"]), domains=set(evidence["domain"])) == figures
    assert {f.project for f in figures} == {"oto", "drc_sib", "assens_job_familie"}


def test_every_quote_is_in_its_source_and_holds_the_numbers(figures):
    for f in figures:
        source = normalise((DATA / "sources" / f.source).read_text(encoding="utf-8"))
        for where in [f.provenance, f.price_basis, *(p.provenance for p in f.per_person)]:
            if where is not None:
                assert normalise(where.quote) in source, (f.id, where.quote)
        quote = normalise(f.provenance.quote)
        for x in (f.estimate, f.ci_low, f.ci_high):
            if x is not None:
                assert any(s in quote for s in _danish(x)), (f.id, x, quote)
        if f.price_year is not None:
            assert str(f.price_year) in f.price_basis.quote, f.id
            if f.discount_rate is not None:
                assert _danish(100 * f.discount_rate)[0] in f.price_basis.quote, f.id
        for p in f.per_person:
            assert str(p.persons) in p.provenance.quote or str(p.persons) in source, (f.id, p.persons)


def test_every_figure_computes_a_ratio_or_says_why_not(figures):
    with_ratio = [f.id for f in figures if f.per_person]
    assert with_ratio == ["oto_total_itt"]  # the one cost measured in the same randomised comparison as effects
    for f in figures:
        assert bool(f.per_person) != bool(f.no_ratio)
        assert (f.price_year is None) == bool(f.price_year_missing)


def _write(tmp_path: Path, costs) -> Path:
    data = tmp_path / "data"
    shutil.copytree(DATA, data, ignore=shutil.ignore_patterns("sources"))
    (data / "costs.yaml").write_text(yaml.safe_dump({"costs": costs}, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return data


def test_a_broken_file_names_file_record_and_field(tmp_path):
    good = yaml.safe_load((DATA / "costs.yaml").read_text(encoding="utf-8"))["costs"]
    bad = [dict(good[0]), dict(good[4]), dict(good[5])]
    bad[0]["per_person"] = [dict(bad[0]["per_person"][0], domain="nowhere")]
    bad[1].pop("price_year_missing")  # no price year and no reason
    bad[1]["unit"] = "eur"
    bad[2]["estimate"] = "lots"
    data = _write(tmp_path, bad)
    with pytest.raises(InputError) as err:
        load_costs(data)
    problems = {(p.record, p.field) for p in err.value.problems}
    assert ("cost 'drc_budget_surplus'", "unit") in problems
    assert ("cost 'drc_societal_surplus'", "estimate") in problems
    assert all(p.file == str(data / "costs.yaml") for p in err.value.problems)
    bad[1]["unit"], bad[2]["estimate"] = "dkk", 80695
    with pytest.raises(InputError) as err:
        load_costs(_write(tmp_path / "again", bad), projects={"oto", "drc_sib"}, domains={"employment"})
    messages = {(p.record, p.field): p.message for p in err.value.problems}
    assert "without a price_year, say why" in messages[("cost 'drc_budget_surplus'", "")]
    assert "unknown domain 'nowhere'" in messages[("cost 'oto_total_itt'", "per_person.0.domain")]


def test_a_ratio_needs_a_randomised_cost_effect_with_an_interval():
    base = yaml.safe_load((DATA / "costs.yaml").read_text(encoding="utf-8"))["costs"][0]
    for change in ({"comparison": "comparison_group"}, {"kind": "net_surplus"}, {"ci_low": None, "ci_high": None}):
        with pytest.raises(ValueError, match="needs a cost_effect from a randomised comparison"):
            CostFigure.model_validate({**base, **change})
    with pytest.raises(ValueError, match="must contain the estimate"):
        CostFigure.model_validate({**base, "ci_low": -100})


def _draws(effect_mean, effect_sd, beneficial="decrease", n=40_000, seed=3, project="oto"):
    rng = np.random.default_rng(seed)
    theta = (effect_mean + effect_sd * rng.standard_normal(n)).reshape(1, 4, -1)
    return {"disability_pension": DomainDraws(
        domain="disability_pension", label="Disability pension", metric="pp", beneficial=beneficial, mid=2.0, scale=10.0, hdi_prob=0.95,
        projects=(project,), designs=("rct",), mu=theta[0], tau=np.ones(theta.shape[1:]), theta=theta, raw=(-5.0,), raw_se=(3.3,))}


def test_cost_per_person_helped_and_the_acceptability_curve_against_the_closed_form(figures):
    """Cost ~ N(-119, SE) thousand DKK per family; effect ~ N(-5, 3) pp (lower is better); 253 adults per 132 families.

    Persons helped per family h = 5/100 * 253/132 on average; P(λ h − C > 0) = Φ((λ E[h] − E[C]) / sqrt(λ² SD(h)² + SD(C)²))."""
    figure = next(f for f in figures if f.id == "oto_total_itt")
    ce = cost_effectiveness([figure], _draws(-5.0, 3.0), wtp=400_000, grid=(0, 100_000, 1_000_000))
    model = next(r for r in ce.results if r.domain == "disability_pension" and r.basis == "model")
    per = 253 / 132 / 100
    h_mean, h_sd = 5.0 * per, 3.0 * per
    c_mean, c_sd = -119_000.0, figure.se * 1000
    assert figure.se == pytest.approx((170 + 408) / (2 * stats.norm.ppf(0.975)))
    assert model.helped_mean == pytest.approx(h_mean, rel=0.01) and model.cost_mean == -119_000
    for wtp, p in model.ceac:
        want = stats.norm.cdf((wtp * h_mean - c_mean) / math.sqrt(wtp**2 * h_sd**2 + c_sd**2))
        assert p == pytest.approx(want, abs=4 * math.sqrt(want * (1 - want) / 40_000) + 1e-3), wtp
    assert model.ceac[0][1] == pytest.approx(stats.norm.cdf(-c_mean / c_sd), abs=0.01)  # at 0: P(it saves money)
    assert model.p_below_wtp == pytest.approx(stats.norm.cdf((4e5 * h_mean - c_mean) / math.sqrt(4e10 * h_sd**2 + c_sd**2)), abs=0.01)
    assert sum(model.quadrants.values()) == pytest.approx(1, abs=1e-5)
    assert model.ratio is None and "unbounded" in model.ratio_note  # P(helps) = Φ(5/3) < 0.975
    trial = next(r for r in ce.results if r.basis == "trial")  # the trial's own estimate, -5 ± 3.3
    assert trial.helped_mean == pytest.approx(5.0 * per, rel=0.03)
    assert "oto_social_itt" not in ce.no_ratio  # only figures given are judged
    assert "flexjob" in " ".join(ce.no_ratio)  # its flex-job outcome has no draws here: said, not skipped silently


def test_a_clearly_beneficial_effect_gets_a_ratio(figures):
    figure = next(f for f in figures if f.id == "oto_total_itt")
    model = next(r for r in cost_effectiveness([figure], _draws(-12.0, 2.0)).results if r.basis == "model")
    assert model.p_helps > 0.975 and model.ratio is not None
    assert model.ratio.low < model.ratio.median < model.ratio.high
    assert "from a saving to a cost" in model.ratio_note  # the cost interval spans zero


def test_acceptability_from_paired_draws():
    cost = np.array([-1.0, 2.0, 5.0, 1.0])
    helped = np.array([0.5, 0.1, 1.0, -0.2])
    # NB = λ h − c: at λ = 0: [1, -2, -5, -1] -> 1/4; at λ = 10: [6, -1, 5, -3] -> 2/4
    assert list(acceptability(cost, helped, [0, 10])) == [0.25, 0.5]
