"""Forest plots: what is plotted where, the legend and axis, reproducible files, and `metaeval plot`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _model_fixtures import bundled_like  # noqa: E402
from _report_fixtures import HOSTILE_NAME, hostile_data_dir, summary_for  # noqa: E402

from metaeval import plots  # noqa: E402

Z = 1.959963984540054


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    from metaeval.harmonise import load_evidence

    evidence = load_evidence(hostile_data_dir(tmp_path_factory.mktemp("plots")))
    return evidence, summary_for(evidence, engine="mcmc")


def _row(rows, kind, label):
    return next(r for r in rows if r["kind"] == kind and r["label"] == label)


def test_rows_order_values_and_kinds(case):
    evidence, summary = case
    rows = plots.forest_rows(evidence, summary, "self_support")
    assert [(r["kind"], r["label"]) for r in rows] == [
        ("project", "Demo trial"),  # randomised first
        ("direction", "Wellbeing [difference]"),
        ("project", HOSTILE_NAME),  # area comparison after
        ("pooled", "Pooled effect (μ)"),
        ("predictive", "A new project (predictive)"),
    ]
    demo = evidence.set_index("estimate_id").loc["demo:self_support"]
    head = _row(rows, "project", "Demo trial")
    # one estimate: the raw value with its 95% CI sits on the project's row beside the shrunken effect
    assert head["raw_x"] == pytest.approx(demo["yi"])
    assert head["raw_low"] == pytest.approx(demo["yi"] - Z * demo["sei"])
    assert head["raw_high"] == pytest.approx(demo["yi"] + Z * demo["sei"])
    shrunk = summary.domains["self_support"].project("demo")
    assert (head["x"], head["low"], head["high"]) == (shrunk.mean, shrunk.hdi_low, shrunk.hdi_high)
    mu = summary.domains["self_support"].mu
    pooled = _row(rows, "pooled", "Pooled effect (μ)")
    assert (pooled["x"], pooled["low"], pooled["high"]) == (mu.mean, mu.hdi_low, mu.hdi_high)
    new = summary.domains["self_support"].theta_new
    assert _row(rows, "predictive", "A new project (predictive)")["high"] == new.hdi_high
    direction = _row(rows, "direction", "Wellbeing [difference]")
    assert direction["direction"] == "increase" and direction["significant"] is True
    # estimates left out of pooling (no numbers, Bloom TOT) are not plotted
    ids = {r.get("estimate_id") for r in rows}
    assert "area:no_numbers" not in ids and "demo:hours_tot" not in ids


def test_rows_keyed_by_estimate_show_each_estimate_raw_and_shrunken():
    """The one-level exact engine has one effect per estimate when a project has several: one row each, both values."""
    from metaeval.exact import fit_exact
    from metaeval.priors import parse_prior

    evidence = bundled_like()
    summary = fit_exact(evidence, priors={"mu": parse_prior("normal(0, 1)"), "tau": parse_prior("halfnormal(0.25)")})
    rows = plots.forest_rows(evidence, summary, "school_absence")
    assert [r["kind"] for r in rows] == ["project", "estimate", "estimate", "pooled", "predictive"]
    assert rows[0]["x"] is None  # no project-level effect in this result
    for r in rows[1:3]:
        entry = summary.domains["school_absence"].project(r["estimate_id"])
        assert r["x"] == entry.mean and r["raw_x"] == pytest.approx(entry.raw)
    # a direction-only finding the exact engine leaves out is shown, faded
    emp = plots.forest_rows(evidence, summary, "employment")
    vive = [r for r in emp if r.get("project") == "vive_social_support"]
    assert [r["kind"] for r in vive] == ["project", "direction"]
    assert all(r["in_model"] is False for r in vive)


def test_project_left_out_by_the_model_is_marked(case):
    evidence, summary = case
    dom = summary.domains["employment"]
    dom = dom.model_copy(update={"projects": tuple(p for p in dom.projects if p.project != "area")})
    summary = summary.model_copy(update={"domains": {**summary.domains, "employment": dom}})
    rows = plots.forest_rows(evidence, summary, "employment")
    area = next(r for r in rows if r.get("project") == "area")
    assert area["in_model"] is False and area["x"] is None and area["raw_x"] == pytest.approx(0.3)
    fig = plots.forest_plot(evidence, summary, "employment")
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert any(label.endswith("(not pooled)") for label in labels)


def test_figure_draws_the_rows_axis_and_legend(case):
    evidence, summary = case
    rows = plots.forest_rows(evidence, summary, "employment")
    fig = plots.forest_plot(evidence, summary, "employment")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [plots.plain_text(r["label"]) for r in rows]
    segments = {tuple(round(v, 9) for v in line.get_xdata()) for line in ax.get_lines() if len(line.get_xdata()) == 2}
    for r in rows:
        if r.get("raw_x") is not None:
            assert (round(r["raw_low"], 9), round(r["raw_high"], 9)) in segments
        if r["kind"] == "project":
            assert (round(r["low"], 9), round(r["high"], 9)) in segments
    assert "standardised mean difference" in ax.get_xlabel() and "higher is better" in ax.get_xlabel()
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "randomised trial" in legend and "area comparison" in legend
    assert "before–after" not in legend  # only designs that are in the plot
    assert "minimal important difference (0.1)" in legend
    assert any(abs(line.get_xdata()[0] - 0.1) < 1e-12 for line in ax.get_lines() if line.get_linestyle() == ":")


def test_decrease_domain_says_lower_is_better():
    from metaeval.exact import fit_exact
    from metaeval.priors import parse_prior

    evidence = bundled_like()
    summary = fit_exact(evidence, priors={"mu": parse_prior("normal(0, 1)"), "tau": parse_prior("halfnormal(0.25)")})
    fig = plots.forest_plot(evidence, summary, "child_welfare")
    ax = fig.axes[0]
    assert "lower is better" in ax.get_xlabel()
    assert "← favours the initiative" in [t.get_text().strip() for t in ax.texts]
    assert any(abs(line.get_xdata()[0] + 2.0) < 1e-12 for line in ax.get_lines() if line.get_linestyle() == ":")


def test_dollar_signs_in_data_are_not_mathtext(case):
    evidence, summary = case
    evidence = evidence.copy()
    evidence.loc[evidence["project_id"] == "demo", "project_name"] = "Cost $5 and $10 $\\frac{1}{0}$"
    fig = plots.forest_plot(evidence, summary, "employment")
    data = plots.figure_bytes(fig, "png")  # mathtext would fail on \frac{1}{0} or eat the dollars
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Cost \\$5 and \\$10" in fig.axes[0].get_yticklabels()[0].get_text()


def test_unknown_domain_is_a_clear_error(case):
    evidence, summary = case
    with pytest.raises(KeyError, match="no_such_domain"):
        plots.forest_plot(evidence, summary, "no_such_domain")


@pytest.mark.parametrize("fmt", ["png", "svg", "pdf"])
def test_same_inputs_same_bytes(case, fmt):
    evidence, summary = case
    one = plots.figure_bytes(plots.forest_plot(evidence, summary, "employment"), fmt)
    two = plots.figure_bytes(plots.forest_plot(evidence, summary, "employment"), fmt)
    assert one == two
    assert len(one) > 5000
    if fmt == "svg":
        assert b"<dc:date>" not in one


def test_save_figure_is_atomic_and_follows_the_suffix(case, tmp_path):
    evidence, summary = case
    fig = plots.forest_plot(evidence, summary, "employment")
    target = tmp_path / "sub" / "forest.svg"
    target.parent.mkdir()
    target.write_text("old")
    assert plots.save_figure(fig, target) == target
    assert target.read_bytes().lstrip().startswith(b"<?xml")
    assert sorted(p.name for p in target.parent.iterdir()) == ["forest.svg"]  # no temporary file left
    with pytest.raises(ValueError, match="unsupported"):
        plots.figure_bytes(fig, "gif")


def test_cli_plot_forest(case, tmp_path, capsys):
    from metaeval.cli import main

    evidence, summary = case
    data = hostile_data_dir(tmp_path)
    summary_file = tmp_path / "summary.json"
    summary_file.write_text(summary.to_json())
    out = tmp_path / "figs" / "employment.png"
    assert main(["plot", "forest", "--data", str(data), "--summary", str(summary_file), "--domain", "employment",
                 "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_bytes() == plots.figure_bytes(plots.forest_plot(evidence, summary, "employment"), "png")

    assert main(["plot", "forest", "--data", str(data), "--summary", str(summary_file), "--domain", "nope",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no domain 'nope'" in err and "employment" in err
    assert main(["plot", "forest", "--data", str(data), "--summary", str(summary_file), "--domain", "employment",
                 "--out", str(tmp_path / "x.gif")]) == 2
    assert ".png, .svg or .pdf" in capsys.readouterr().err
    assert main(["plot", "forest", "--data", str(data), "--summary", str(tmp_path / "missing.json"),
                 "--domain", "employment", "--out", str(out)]) == 2
    assert "no fit summary" in capsys.readouterr().err
