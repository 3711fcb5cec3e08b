"""The commands `metaeval compare`, `plan` and `costs`, and the report's initiative sections from the fit in --out.

The known-tau fit of two studies (``_initiative_fixtures.known_tau_fit``) is read from its --out;
one test fits a fresh folder to check that a command without a fit fits first and says so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _initiative_fixtures import known_tau_fit, known_tau_posterior  # noqa: E402

pytestmark = [pytest.mark.subprocess, pytest.mark.mcmc]  # the commands, on a fit made by the command

DATA = Path(__file__).resolve().parents[1] / "data"


def _run(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "metaeval.cli", *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_compare_command_json():
    """`metaeval compare --format json` on the fit in --out: every ordered pair, P(best) summing to one, expected ranks."""
    from metaeval.ranking import compare

    fit = known_tau_fit()
    done = _run("compare", *fit["options"], "--format", "json", "--no-bias-check")
    assert done.returncode == 0, done.stderr
    assert "fitting it first" not in done.stderr  # it read the fit in --out
    block = json.loads(done.stdout)["domains"]["all"]
    assert block["pairwise"]["A"]["B"] + block["pairwise"]["B"]["A"] == pytest.approx(1.0, abs=1e-5)
    assert sum(r["p_best"] for r in block["ranks"]) == pytest.approx(1.0, abs=1e-5)
    assert {r["project"]: r["expected_rank"] for r in block["ranks"]}["A"] == pytest.approx(2 - block["pairwise"]["A"]["B"], abs=1e-4)
    assert block["pairwise"] == compare(known_tau_posterior()).domains["all"].pairwise
    csv = _run("compare", *fit["options"], "--format", "csv", "--no-bias-check")
    assert csv.returncode == 0 and csv.stdout.splitlines()[0].startswith("domain,kind,project,other,p_better")
    table = _run("compare", *fit["options"], "--no-bias-check")
    assert "Most likely the best in all: A" in table.stdout and "P(row better than column)" in table.stdout


@pytest.mark.slow
def test_plan_command(tmp_path):
    fit = known_tau_fit()
    done = _run("plan", *fit["options"], "--domain", "all", "--sd", "1", "--n", "25,100,400", "--format", "json", "--plot", tmp_path / "plan.png")
    assert done.returncode == 0, done.stderr
    block = json.loads(done.stdout)["domains"]["all"]
    widths = [p["expected_width"] for p in block["points"]]
    assert [p["n"] for p in block["points"]] == [25, 100, 400] and widths == sorted(widths, reverse=True)
    assert block["se_basis"] == "outcome SD set by the analyst" and block["points"][0]["se"] == pytest.approx((2 / 25) ** 0.5, rel=1e-5)
    assert (tmp_path / "plan.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the domain's metric is not stated in a bare CSV: without --sd or --se it is skipped with the reason
    table = _run("plan", *fit["options"])
    assert table.returncode == 0 and "not planned" in table.stdout and "set sd or se" in table.stdout
    refused = _run("plan", *fit["options"], "--sd", "1", "--n", "1")
    assert refused.returncode == 2 and "--n" in refused.stderr and "Traceback" not in refused.stderr


@pytest.mark.slow
def test_report_from_the_fit_in_out_has_the_comparison_and_the_plan(tmp_path):
    fit = known_tau_fit()
    kept = fit["out"] / "kept"
    before = sorted(kept.iterdir())
    done = _run("report", *fit["options"], "--output", tmp_path / "report.html")
    assert done.returncode == 0, done.stderr
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Most likely the best in all: A" in html  # the comparison, from the fit's draws
    assert "This model takes every design at face value: there is no bias adjustment to check the order against" in html
    assert 'id="plan"' in html and "Not computed" not in html[html.index('id="compare"'):html.index('id="costs"')]
    assert sorted(kept.iterdir()) == before  # --output: the report's file is all it writes


@pytest.mark.slow
def test_a_report_made_again_from_the_same_fit_reads_its_plan_back_and_is_the_same_page(tmp_path):
    fit = known_tau_fit()
    out = tmp_path / "out"
    shutil.copytree(fit["out"], out, symlinks=True)
    options = [o if o != str(fit["out"]) else str(out) for o in fit["options"]]
    assert len(list((out / "kept").iterdir())) == 1  # the fit kept the comparison its report shows
    pages = []
    for _ in range(2):
        done = _run("report", *options)
        assert done.returncode == 0, done.stderr
        pages.append((out / "report.html").read_bytes())
    kept = sorted((out / "kept").iterdir())  # the first report read the fit's comparison and kept its plan; the second read both
    assert pages[1] == pages[0] and len(kept) == 2 and all(path.stat().st_size > 0 for path in kept)


@pytest.mark.slow
def test_a_command_without_a_fit_fits_first_and_says_so(tmp_path):
    fit = known_tau_fit()
    options = [o if o != str(fit["out"]) else str(tmp_path / "out") for o in fit["options"]]
    options[options.index("--draws") + 1] = "300"
    done = _run("compare", *options, "--tune", "300", "--no-bias-check", "--allow-failed-gate", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert "no fit in" in done.stderr and "fitting it first" in done.stderr
    assert list((tmp_path / "out" / "fits").glob("*/posterior.nc"))
    again = _run("compare", *options, "--tune", "300", "--no-bias-check", "--allow-failed-gate", "--format", "json")
    assert "fitting it first" not in again.stderr and again.stdout == done.stdout  # read back, the same numbers


def test_a_bad_costs_file_is_refused_before_any_fit(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(DATA, data)
    costs = yaml.safe_load((data / "costs.yaml").read_text(encoding="utf-8"))
    costs["costs"][0]["project"] = "nobody"
    costs["costs"][1]["price_year"] = "last year"
    (data / "costs.yaml").write_text(yaml.safe_dump(costs, allow_unicode=True, sort_keys=False), encoding="utf-8")
    done = _run("costs", "--data", data, "--out", tmp_path / "out", timeout=300)
    assert done.returncode == 2, done.stderr
    assert f"{data / 'costs.yaml'}: record cost 'oto_total_itt', field project: unknown project 'nobody'" in done.stderr
    assert "record cost 'oto_social_itt', field price_year" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()  # nothing fitted, nothing written
