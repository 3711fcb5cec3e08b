"""The report's SVG figures: scales and ticks, where each row's marks sit, escaping, and reproducible bytes
(the page itself is checked in Chromium by tests/test_report_browser.py)."""

from __future__ import annotations

import math
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _report_fixtures import HOSTILE_NAME, HOSTILE_QUOTE, hostile_data_dir, summary_for  # noqa: E402

from metaeval import charts  # noqa: E402
from metaeval.plots import forest_rows  # noqa: E402

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    from metaeval.harmonise import load_evidence

    evidence = load_evidence(hostile_data_dir(tmp_path_factory.mktemp("charts")))
    return evidence, summary_for(evidence, engine="mcmc")


def _points(d: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in re.findall(r"(-?[\d.]+),(-?[\d.]+)", d)]


def _centre(mark: dict) -> tuple[float, float]:
    pts = np.array(_points(mark["d"]))
    return tuple((pts.min(0) + pts.max(0)) / 2)


def test_nice_ticks_are_round_inside_and_few():
    rng = np.random.default_rng(3)
    for _ in range(500):
        lo = rng.normal(0, 10.0 ** rng.integers(-4, 5))
        hi = lo + abs(rng.normal(0, 10.0 ** rng.integers(-4, 5))) + 1e-9
        ticks, step = charts.nice_ticks(lo, hi)
        assert 2 <= len(ticks) <= 7
        assert all(lo - 1e-9 * abs(step) <= t <= hi + 1e-9 * abs(step) for t in ticks)
        mantissa = step / 10 ** math.floor(math.log10(step) + 1e-12)
        assert any(math.isclose(mantissa, m) for m in (1, 2, 2.5, 5, 10)), step
        assert np.allclose(np.diff(ticks), step)


def test_tick_text_has_the_decimals_its_step_needs():
    assert [charts.tick_text(t, 0.25) for t in (-0.5, -0.25, 0, 0.25)] == ["−0.50", "−0.25", "0", "0.25"]
    assert [charts.tick_text(t, 2.5) for t in (0, 2.5, 5)] == ["0", "2.5", "5.0"]
    assert [charts.tick_text(t, 25) for t in (0, 25, 100)] == ["0", "25", "100"]
    assert charts.tick_text(125000, 25000) == "125,000"
    assert charts.tick_text(-1e-17, 0.1) == "0"  # no "−0.0" from rounding


def test_scales_map_ends_and_log_midpoint():
    x = charts.Scale(-2.0, 6.0, 100.0, 500.0)
    assert (x(-2), x(6), x(2)) == (100.0, 500.0, 300.0)
    y = charts.Scale(0.0, 100.0, 330.0, 30.0)  # y grows downwards
    assert (y(0), y(100), y(25)) == (330.0, 30.0, 255.0)
    log = charts.Scale(50.0, 800.0, 0.0, 400.0, log=True)
    assert log(200) == pytest.approx(200.0)  # 200 is the geometric middle of 50 and 800


def test_forest_marks_sit_where_the_numbers_are(case):
    evidence, summary = case
    dom = summary.domains["employment"]
    chart = charts.forest_chart(evidence, summary, "employment")
    rows = forest_rows(evidence, summary, "employment")
    marks = chart["marks"]
    labels = [m for m in marks if m["cls"] == "label"]
    assert [m["text"] for m in labels] == [charts._row_label(r) for r in rows]
    assert np.all(np.diff([m["y"] for m in labels]) == charts.ROW)  # one row each, top to bottom
    zero = next(m for m in marks if m["cls"] == "zero")
    pooled = next(m for m in marks if m["cls"] == "pooled")
    (low, _), (high, _) = min(_points(pooled["d"])), max(_points(pooled["d"]))
    # the x scale is linear: two known values fix it, and the others must fall on it
    scale = (high - low) / (dom.mu.hdi_high - dom.mu.hdi_low)
    assert zero["x1"] == pytest.approx(low - scale * dom.mu.hdi_low, abs=0.02)
    shrunken = [m for m in marks if m["cls"] == "shrunken" and m["kind"] == "path"]
    projects = [r for r in rows if r["kind"] in ("project", "estimate") and r.get("x") is not None]
    assert len(shrunken) == len(projects)
    for m, r in zip(shrunken, projects):
        assert _centre(m)[0] == pytest.approx(zero["x1"] + scale * r["x"], abs=0.05)
        assert f"{r['x']:.3g}".replace("-", "−") in m["tip"]
    raw = [m for m in marks if m["cls"] == "raw" and m["kind"] == "line"]
    with_raw = [r for r in rows if r.get("raw_low") is not None]
    for m, r in zip(raw, with_raw):
        assert (m["x1"], m["x2"]) == pytest.approx((zero["x1"] + scale * r["raw_low"], zero["x1"] + scale * r["raw_high"]), abs=0.05)
    if dom.mid:
        mid = next(m for m in marks if m["cls"] == "mid")
        assert mid["x1"] == pytest.approx(zero["x1"] + scale * (dom.mid if dom.beneficial == "increase" else -dom.mid), abs=0.05)


def test_a_tall_forest_draws_one_row_per_project(case):
    """Beyond ``max_rows`` rows only the projects' rows are drawn (the estimates' and findings' rows are counted
    in ``omitted``); within it, every row."""
    evidence, summary = case
    domain = max(summary.domains, key=lambda d: sum(r["kind"] in ("estimate", "direction") for r in forest_rows(evidence, summary, d)))
    rows = forest_rows(evidence, summary, domain)
    subrows = sum(r["kind"] in ("estimate", "direction") for r in rows)
    assert subrows > 0
    labels = lambda chart: [m["text"] for m in chart["marks"] if m["cls"] == "label"]  # noqa: E731
    whole = charts.forest_chart(evidence, summary, domain, max_rows=len(rows))
    assert whole["omitted"] == 0 and labels(whole) == [charts._row_label(r) for r in rows]
    short = charts.forest_chart(evidence, summary, domain, max_rows=len(rows) - 1)
    assert short["omitted"] == subrows
    assert labels(short) == [charts._row_label(r) for r in rows if r["kind"] not in ("estimate", "direction")]
    assert short["height"] < whole["height"]


def test_direction_words_stay_inside_and_say_all_in_a_tooltip(case):
    evidence, summary = case
    for domain in summary.domains:
        chart = charts.forest_chart(evidence, summary, domain)
        for m in (m for m in chart["marks"] if m["kind"] == "text" and m["cls"] == "direction"):
            width = charts.text_width(m["text"], m["size"])
            left, right = (m["x"] - width, m["x"]) if m["anchor"] == "end" else (m["x"], m["x"] + width)
            assert 0 <= left and right <= chart["width"], (domain, m["text"])
            assert m["tip"] is None or (m["text"].endswith("…") and m["tip"].startswith(m["text"][:-1]))


def test_the_svg_is_xml_with_data_text_as_text(case):
    evidence, summary = case
    domain = evidence.loc[evidence["project_name"] == HOSTILE_NAME, "domain"].iloc[0]
    text = charts.svg(charts.forest_chart(evidence, summary, domain))
    root = ET.fromstring(text)  # well-formed: every data text escaped
    shown = ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]
    assert charts.shortened(HOSTILE_NAME, charts.MAX_LABEL) in " ".join(shown)
    assert not [e for e in root.iter() if e.tag.removeprefix(SVG) not in ("svg", "title", "rect", "line", "path", "text")]
    assert not [k for e in root.iter() for k in e.attrib if k.startswith("on")]
    assert "<img" not in text and HOSTILE_QUOTE not in text


def test_same_inputs_same_bytes(case):
    evidence, summary = case
    for domain in summary.domains:
        one = charts.svg(charts.forest_chart(evidence, summary, domain))
        assert one == charts.svg(charts.forest_chart(evidence, summary, domain))
        numbers = re.sub(r"<title>.*?</title>", "", one)
        assert not re.search(r"\d[eE][-+]?\d", numbers) and not re.search(r"[^\d.]-0(\.0+)?[ ,\"]", numbers)  # plain, no "-0.0"


def _ce(basis: str, cost: str, domain: str, wtp=None):
    return SimpleNamespace(project="oto", cost=cost, domain=domain, outcome=f"person in {domain}", basis=basis, currency="DKK",
                           wtp=wtp, ceac=tuple((x, min(1.0, 0.4 + x / 1e6)) for x in range(0, 500_001, 50_000)))


def test_ceac_chart_lines_colours_and_threshold():
    ce = SimpleNamespace(results=(_ce("model", "c1", "employment", 200_000), _ce("trial", "c1", "employment"), _ce("model", "c2", "school")))
    chart = charts.ceac_chart(ce, {"oto": "Opgang til Opgang"})
    series = [m for m in chart["marks"] if m["cls"] == "series"]
    assert [s["dash"] for s in series] == [None, "6 3", None]  # the trial's line dashed
    assert series[0]["stroke"] == series[1]["stroke"] != series[2]["stroke"]  # a colour per cost figure and outcome
    assert series[0]["tip"] == "Opgang til Opgang: per person in employment (model)"
    first = _points(series[0]["d"])
    assert len(first) == 11 and first[0][1] > first[-1][1]  # P rises: y (downwards) falls
    threshold = [m for m in chart["marks"] if m["cls"] == "threshold"]
    assert len(threshold) == 1 and first[0][0] < threshold[0]["x1"] < first[-1][0]
    ET.fromstring(charts.svg(chart))


def test_plan_chart_uses_a_log_axis_at_the_study_sizes():
    points = [SimpleNamespace(n=n, se=1 / math.sqrt(n), width_ratio=1 - n / 1000, p_change=n / 500) for n in (50, 100, 200, 400)]
    plan = SimpleNamespace(domains={"employment": SimpleNamespace(label="Employment", points=points),
                                    "school": SimpleNamespace(label="School", points=points)})
    chart = charts.plan_chart(plan)
    ticks = [m for m in chart["marks"] if m["kind"] == "text" and m["anchor"] == "middle" and m["text"] in ("50", "100", "200", "400")]
    xs = sorted({m["x"] for m in ticks})[:4]
    assert np.allclose(np.diff(xs), xs[1] - xs[0], atol=0.02)  # doublings equally spaced: a log axis
    series = [m for m in chart["marks"] if m["cls"] == "series"]
    assert len(series) == 4  # two domains in two panels
    assert {s["tip"] for s in series} == {"Employment", "School"}
    ET.fromstring(charts.svg(chart))
