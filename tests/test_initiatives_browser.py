"""The report's initiative sections in a real browser (the harness of test_report_browser: headless Chromium, offline).

The bundled evidence, the exact engine's result and draws normal around it, with costs, a
comparison and a plan: the page loads without errors or requests, every figure decodes, the
initiatives × domains matrix is the first thing after the overview and fits the page, each
initiative has a card the matrix links to, and a screenshot of the matrix is kept for a person
to look at (METAEVAL_SCREENSHOTS=DIR).
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import test_report_browser as harness  # noqa: E402  (skips loudly without Chromium)
from _initiative_fixtures import normal_draws  # noqa: E402

pytestmark = pytest.mark.browser

LAYOUT = """(() => {
  const top = id => document.getElementById(id).getBoundingClientRect().top + window.scrollY;
  const matrix = document.querySelector('table.matrix');
  const box = matrix.getBoundingClientRect();
  return {
    order: ['overview', 'at-a-glance', 'compare', 'costs', 'plan', 'initiatives', 'domains'].map(top),
    matrix: {left: box.left, right: box.right, top: box.top + window.scrollY, height: box.height,
             rows: matrix.tBodies[0].rows.length, text: matrix.innerText},
    cards: [...document.querySelectorAll('section.card')].map(s => s.id),
    links: [...document.querySelectorAll('table.matrix tbody th a')].map(a => a.getAttribute('href').slice(1)),
    figures: [...document.querySelectorAll('figure svg.chart')].map(s => s.getAttribute('aria-label')),
  };
})()"""


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from metaeval.analysis import analyse
    from metaeval.certainty import judge
    from metaeval.costs import load_costs
    from metaeval.exact import fit_exact
    from metaeval.harmonise import load_evidence
    from metaeval.report import write_report
    from metaeval.spec import load_spec

    tmp = tmp_path_factory.mktemp("initiatives-browser")
    evidence = load_evidence()
    spec = load_spec("default")
    result = judge(fit_exact(evidence, priors=spec.priors, hdi_prob=spec.hdi_prob), evidence)
    analysis = analyse(evidence, result, source=normal_draws(result), costs=load_costs(), wtp=300_000, sims=200)
    path = write_report(tmp / "report.html", evidence, result, analysis=analysis, progress=False)
    browser = harness.Chromium(tmp / "profile")
    try:
        browser.call("Emulation.setDeviceMetricsOverride", session=True, width=1200, height=900, deviceScaleFactor=1, mobile=False)
        browser.call("Page.navigate", session=True, url=path.resolve().as_uri())
        browser.wait_for("Page.loadEventFired")
        facts = browser.evaluate(harness.PAGE_FACTS)
        layout = browser.evaluate(LAYOUT)
        clip = {"x": 0, "y": layout["matrix"]["top"] - 60, "width": 1200, "height": layout["matrix"]["height"] + 80, "scale": 1}
        png = base64.b64decode(browser.call("Page.captureScreenshot", session=True, format="png", captureBeyondViewport=True,
                                            clip=clip)["data"])
        events = list(browser.events)
    finally:
        browser.close()
    shot = tmp / "report-matrix.png"
    shot.write_bytes(png)
    harness._keep(shot)
    return {"path": path, "facts": facts, "layout": layout, "events": events, "png": png, "analysis": analysis, "evidence": evidence}


def test_no_errors_no_requests_every_figure_decodes(page):
    assert harness._problems(page["events"], page["path"]) == []
    assert page["facts"]["broken"] == [] and page["facts"]["scripts"] == 0
    alts = page["layout"]["figures"]
    assert "Cost-effectiveness acceptability curves" in alts
    assert "Expected interval width and probability of a changed verdict against study size" in alts
    harness._charts_shown(page["facts"], len(alts))


def test_the_matrix_comes_first_and_fits_the_page(page):
    order = page["layout"]["order"]
    assert order == sorted(order)  # overview, matrix, compare, costs, plan, cards, then the domains
    m = page["layout"]["matrix"]
    assert m["rows"] == page["evidence"].project_id.nunique()
    assert m["left"] >= 0 and m["right"] <= 1200 and page["facts"]["width"] <= 1200
    for words in ("not measured", "reported, not usable", "●●●", "○○○"):
        assert words in m["text"], words
    assert any(label in m["text"] for label in ("Very likely beneficial", "Likely beneficial", "Possibly beneficial", "Unclear"))
    width, height, colours = harness._not_blank(page["png"])
    assert width == 1200 and colours > 20  # coloured cells, not a blank box


def test_every_initiative_has_a_card_the_matrix_links_to(page):
    cards, links = page["layout"]["cards"], page["layout"]["links"]
    assert len(cards) == page["evidence"].project_id.nunique() and links == cards
    text = page["facts"]["text"]
    for name in page["evidence"].project_name.unique():
        assert name in text
