"""The robustness section `metaeval run` puts in its report: the variants the exact engine can
compute, the verdict of every domain under each, a flip where the direction changes, and every variant it could not
compute named with the reason, never faked."""

from __future__ import annotations

from pathlib import Path

import pytest

from metaeval.certainty import judge
from metaeval.exact import fit_exact
from metaeval.harmonise import load_evidence
from metaeval.robustness import MAX_LEAVE_ONE_OUT, check, report_section, variants
from metaeval.spec import load_spec


@pytest.fixture(scope="module")
def bundled():
    evidence, spec = load_evidence(), load_spec("default")
    return evidence, spec, judge(fit_exact(evidence, priors=spec.priors), evidence)


def test_every_variant_is_either_computed_or_named_with_its_reason(bundled):
    evidence, spec, baseline = bundled
    robustness = check(evidence, spec, baseline)
    projects = sorted({p.project for dom in baseline.domains.values() for p in dom.projects})
    tried = {v.label for v in variants(spec, projects)}
    computed = {o.variant for o in robustness.outcomes}
    skipped = {label for label, _ in robustness.skipped}
    assert computed | skipped == tried and not computed & skipped
    # the bundled evidence: findings without numbers in several projects of a domain are computed exactly on request
    # only (seconds a domain); leaving them out, or keeping the trials alone, computes in milliseconds
    assert computed == {"randomised trials only", "findings without numbers left out"}
    assert all("direction-only findings in" in why and "on request only (--engine exact" in why for _, why in robustness.skipped)
    section = report_section(robustness, baseline)
    left_out = section["text"][-1]
    assert left_out.startswith("Not computed here") and all(label in left_out for label in skipped)
    assert left_out.count("because") == len({why for _, why in robustness.skipped})  # one reason, said once
    rows = {r["domain"]: r for r in section["table"]}
    assert set(rows) == {dom.label for dom in baseline.domains.values()}
    assert rows["Employment"]["variants fitted"] == 2 and rows["Employment"]["direction flips under"] == "none"
    # a domain no computed variant keeps (in the MCMC fit: health and wellbeing, one finding without a number from a
    # before-after study): its direction is not assessed, which is not "none"
    elsewhere = baseline.domains["employment"].model_copy(update={"id": "elsewhere", "label": "Elsewhere"})
    only_here = baseline.model_copy(update={"domains": {**baseline.domains, "elsewhere": elsewhere}})
    row = next(r for r in report_section(check(evidence, spec, only_here), only_here)["table"] if r["domain"] == "Elsewhere")
    assert (row["variants fitted"], row["verdict changes under"]) == (0, "–")
    assert row["direction flips under"] == "not assessed: no computed variant leaves this domain anything to pool"


def test_a_direction_that_changes_is_a_flip_in_the_section(bundled):
    """Mirror one domain's baseline: every computed variant now points the other way there, and the section says so."""
    evidence, spec, baseline = bundled
    dom = baseline.domains["activation"]
    mirrored = baseline.model_copy(update={"domains": {**baseline.domains, "activation": dom.model_copy(
        update={"mu": dom.mu.model_copy(update={"p_beneficial": 1 - dom.mu.p_beneficial})})}})
    assert check(evidence, spec, baseline).flips().get("activation") is None
    flips = check(evidence, spec, mirrored).flips()
    assert flips["activation"] == ["randomised trials only", "findings without numbers left out"]
    row = next(r for r in report_section(check(evidence, spec, mirrored), mirrored)["table"] if r["domain"] == dom.label)
    assert row["direction flips under"] == ("randomised trials only; findings without numbers left out "
                                            "(not counted in this domain's certainty rating)")  # the baseline was judged without them
    judged = judge(mirrored, evidence, flips)
    assert any(g.domain == "robustness" for g in judged.domains["activation"].certainty.downgrades)
    row = next(r for r in report_section(check(evidence, spec, judged), judged)["table"] if r["domain"] == dom.label)
    assert row["direction flips under"] == "randomised trials only; findings without numbers left out"


def test_many_projects_are_not_left_out_one_by_one(bundled):
    _, spec, _ = bundled
    few = [f"p{i}" for i in range(MAX_LEAVE_ONE_OUT)]
    assert sum(v.drop_project is not None for v in variants(spec, few)) == MAX_LEAVE_ONE_OUT
    assert not any(v.drop_project for v in variants(spec, [*few, "one more"]))


def test_run_and_report_put_it_in_the_report_and_a_summary_file_does_not(bundled, tmp_path):
    from metaeval.cli import build_parser
    from metaeval.commands import report_extras

    evidence, spec, baseline = bundled
    from metaeval.certainty import judge

    robustness = check(evidence, spec, baseline)
    for argv in (["run", "--out", str(tmp_path)], ["report", "--out", str(tmp_path)]):
        judged, extras = report_extras(build_parser().parse_args(argv), evidence, baseline)
        assert judged == judge(baseline, evidence, robustness.flips())  # a flip lowers the certainty the report shows
        assert extras["robustness"] == report_section(robustness, judged)
    summary_file = Path(tmp_path) / "summary.json"
    summary_file.write_text(baseline.to_json(), encoding="utf-8")
    args = build_parser().parse_args(["report", "--out", str(tmp_path), "--summary", str(summary_file)])
    assert report_extras(args, evidence, baseline)[0] is baseline
    assert "robustness" not in (report_extras(args, evidence, baseline)[1] or {})
