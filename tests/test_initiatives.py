"""Initiative profiles, the initiatives × domains matrix and the cards, tested as data; and where they sit in the report.

On the bundled evidence with the exact engine's result (milliseconds) and, where draws are
needed, draws normal around that result (``_initiative_fixtures.normal_draws``): what is tested
is the bookkeeping and the views, not the statistics (test_ranking, test_planning, test_costs).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).parent))
from _initiative_fixtures import normal_draws  # noqa: E402

from metaeval import views, views_initiatives, words  # noqa: E402
from metaeval.analysis import analyse  # noqa: E402
from metaeval.initiatives import profiles  # noqa: E402


@pytest.fixture(scope="module")
def bundled():
    from metaeval.certainty import judge
    from metaeval.costs import load_costs
    from metaeval.exact import fit_exact
    from metaeval.harmonise import load_evidence
    from metaeval.spec import load_spec

    evidence = load_evidence()
    spec = load_spec("default")
    result = judge(fit_exact(evidence, priors=spec.priors, hdi_prob=spec.hdi_prob), evidence)
    draws, costs = normal_draws(result), load_costs()
    analysis = analyse(evidence, result, source=draws, costs=costs, wtp=300_000, sims=200)
    return {"evidence": evidence, "result": result, "draws": draws, "costs": costs, "analysis": analysis}


def test_every_initiative_and_figure_is_accounted_for(bundled):
    evidence, result = bundled["evidence"], bundled["result"]
    prof = profiles(evidence, result)
    assert [p.project for p in prof.profiles] == sorted(evidence.project_id.unique(), key=lambda p: (
        words.design_rank(evidence.loc[evidence.project_id == p, "design"].iloc[0]),
        evidence.loc[evidence.project_id == p, "project_name"].iloc[0].lower()))
    assert prof.domains == tuple(result.domains)
    for p in prof.profiles:
        mine = evidence[evidence.project_id == p.project]
        assert [e.domain for e in p.effects if e.domain in result.domains] == [d for d in result.domains if d in set(mine.domain)]
        assert {e.domain for e in p.effects} == set(mine.domain)  # every domain it reported in, and no other
        for e in p.effects:
            rows = mine[mine.domain == e.domain]
            unused = [u for u in p.unused if u.domain == e.domain]
            assert e.n_figures == len(rows) and e.n_entered + len(unused) == e.n_figures
            dom = result.domains.get(e.domain)
            in_fit = dom is not None and any(x.project == p.project for x in dom.projects)
            assert (e.status == "pooled") == in_fit
        for u in p.unused:
            row = mine[mine.estimate_id == u.estimate_id].iloc[0]
            assert u.reason  # never a figure left out without a reason
            if not row.poolable and isinstance(row.exclusion_reason, str):
                assert u.reason == row.exclusion_reason
    oto = next(p for p in prof.profiles if p.project == "oto")
    first = evidence[evidence.project_id == "oto"].iloc[0]
    assert (oto.design, oto.evaluator, oto.status, oto.risk_of_bias) == (first.design, first.evaluator, first.status, first.risk_of_bias)
    school = oto.effect("school")  # three estimates: the exact engine pools them as separate studies
    assert school.status == "pooled" and len(school.estimates) == 3 and school.mean is None


def test_probabilities_from_draws_or_a_normal_approximation(bundled):
    result, draws = bundled["result"], bundled["draws"]
    with_draws = profiles(bundled["evidence"], result, draws=draws)
    without = profiles(bundled["evidence"], result)
    checked = 0
    for p, q in zip(with_draws.profiles, without.profiles):
        for e, approx in zip(p.effects, q.effects):
            if e.status != "pooled" or e.estimates or e.domain not in draws or p.project not in draws[e.domain].projects:
                continue
            dd = draws[e.domain]
            good = dd.sign * dd.effect(p.project).ravel()
            assert e.from_draws and e.p_beneficial == pytest.approx(np.mean(good > 0), abs=1e-5)
            assert e.p_mid == pytest.approx(np.mean(good > dd.mid), abs=1e-5)
            sign = -1.0 if result.domains[e.domain].beneficial == "decrease" else 1.0
            assert not approx.from_draws and approx.p_beneficial == pytest.approx(stats.norm.cdf(sign * approx.mean / approx.sd), abs=1e-5)
            checked += 1
    assert checked >= 5


def test_matrix_cells(bundled):
    result, analysis = bundled["result"], bundled["analysis"]
    names = views.Names(views.rows_of(bundled["evidence"]), result)
    m = views_initiatives.matrix(analysis, result, names)
    assert [c["label"] for c in m["columns"]] == [dom.label for dom in result.domains.values()]
    assert len(m["rows"]) == len(analysis.profiles.profiles) == 10
    kinds = set()
    for row, prof in zip(m["rows"], analysis.profiles.profiles):
        assert row["name"] == prof.name and len(row["cells"]) == len(result.domains)
        for cell, d in zip(row["cells"], result.domains):
            e = prof.effect(d)
            kinds.add(cell["kind"])
            if e is None:
                assert cell == {"kind": "none", "text": "not measured"}
            elif e.status == "not pooled":
                assert cell["text"] == "reported, not usable"
            elif not e.estimates:
                assert cell["css"] == words.verdict(e.p_beneficial)[1] and cell["verdict"] == words.verdict(e.p_beneficial)[0]
                assert cell["strength"]["mark"] == {"rct": "●●●", "matched_register": "●●○", "comparison_group": "●○○",
                                                    "before_after": "○○○"}[e.design]
                if e.raw is not None:
                    assert cell["text"] == words.number(e.mean, result.domains[d].metric)
    assert kinds == {"none", "unused", "effect"}
    assert not m["approximate"]  # probabilities from draws
    assert views_initiatives.matrix(analyse(bundled["evidence"], result), result, names)["approximate"]


def test_cards(bundled):
    result, analysis = bundled["result"], bundled["analysis"]
    names = views.Names(views.rows_of(bundled["evidence"]), result)
    cards = views_initiatives.cards(analysis, result, names)
    matrix = views_initiatives.matrix(analysis, result, names)
    assert [c["anchor"] for c in cards] == [r["anchor"] for r in matrix["rows"]]  # the matrix links to each card
    assert len({c["anchor"] for c in cards}) == len(cards)
    by = {c["id"]: c for c in cards}
    assert [k["id"] for k in by["oto"]["costs"]] == ["oto_total_itt", "oto_social_itt", "oto_employment_itt", "oto_total_tot"]
    assert by["oto"]["costs"][0]["value"].startswith("−119 thousand DKK (95% CI −408 to 170): a saving")
    assert "2022 prices" in by["oto"]["costs"][0]["basis"] and "municipal perspective" in by["oto"]["costs"][0]["basis"]
    assert by["drc_sib"]["costs"][0]["value"].startswith("28,353 DKK") and "price year not stated" in by["drc_sib"]["costs"][0]["basis"]
    assert {r["outcome"] for r in by["oto"]["ratios"]} == {"adult kept off disability pension", "additional adult in a flex job or awaiting one"}
    assert all("at 300,000 DKK" in r["wtp"] for r in by["oto"]["ratios"])
    assert not by["drc_sib"]["ratios"] and not by["cph_perspektiv"]["effects"]
    unused = sum(len(u["figures"]) for u in by["assens_job_familie"]["unused"])
    assert unused == len(next(p for p in analysis.profiles.profiles if p.project == "assens_job_familie").unused)


def _h2(html: str) -> list[str]:
    return re.findall(r'<h2 id="([^"]+)"', html)


def test_the_report_opens_with_the_matrix_and_has_a_card_per_initiative(bundled):
    from metaeval.report import render_report

    evidence, result, analysis = bundled["evidence"], bundled["result"], bundled["analysis"]
    html = render_report(evidence, result, analysis=analysis)
    assert _h2(html)[:6] == ["overview", "at-a-glance", "compare", "costs", "plan", "initiatives"]
    assert _h2(html)[6] == "domains"
    assert html.count('class="card"') == evidence.project_id.nunique()
    toc = re.search(r'<nav class="toc">(.*?)</nav>', html, re.S).group(1)
    assert re.findall(r'href="#([^"]+)"', toc)[:3] == ["overview", "at-a-glance", "compare"]
    best = analysis.plan.most_changed()
    assert f"most likely change the verdict in {result.domains[best[0]].label}" in html
    assert html.count('<svg xmlns="http://www.w3.org/2000/svg" class="chart"') >= len(result.domains) // 2 + 2  # forest plots, the CEAC and the plan figure
    assert 'aria-label="Cost-effectiveness acceptability curves"' in html and 'aria-label="Expected interval width' in html
    # without draws: the matrix and cards are there, the rest says why not
    bare = render_report(evidence, result)
    assert _h2(bare)[:2] == ["overview", "at-a-glance"] and bare.count('class="card"') == evidence.project_id.nunique()
    assert "Not computed: needs posterior draws" in bare
    assert "≈" in bare  # probabilities marked as approximate


def test_report_text_from_data_is_escaped(tmp_path):
    """Names and reasons from an evidence file reach the matrix and cards as text, never as markup."""
    from _report_fixtures import HOSTILE_NAME, hostile_data_dir, summary_for

    from metaeval.harmonise import load_evidence
    from metaeval.report import render_report

    evidence = load_evidence(hostile_data_dir(tmp_path))
    html = render_report(evidence, summary_for(evidence, engine="mcmc"))
    assert HOSTILE_NAME not in html and "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt; &amp; Søn" in html
    matrix = html[html.index('id="at-a-glance"'):html.index('id="compare"')]
    assert "&lt;script&gt;" in matrix and "<script" not in matrix
