"""Sensitivity analysis: the grid, the TOT switch, verdicts, leave-one-project-out, power-scaling, and
the same numbers from a serial run, a 2-worker local cluster and an external Dask scheduler."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from metaeval.errors import InputError
from metaeval.harmonise import load_evidence
from metaeval.priors import parse_prior
from metaeval.sensitivity import (
    BASELINE,
    FACTORS,
    load_grid,
    loo_table,
    run_sensitivity,
    scenario_spec,
    verdicts,
)

VENV_BIN = Path(sys.executable).parent
FAST = {"chains": 2, "draws": 150, "tune": 150, "seed": 11}

MINI_CSV = """study,yi,sei,domain,design,project
a1,0.30,0.12,jobs,rct,A
b1,0.10,0.15,jobs,comparison_group,B
c1,0.45,0.20,jobs,before_after,C
a2,0.05,0.10,school,rct,A
b2,-0.10,0.12,school,comparison_group,B
"""


@pytest.fixture(scope="module")
def mini_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sens") / "mini.csv"
    path.write_text(MINI_CSV)
    return path


# --- the grid ----------------------------------------------------------------------------------


def test_default_grid_varies_one_factor_at_a_time():
    grid = load_grid()
    scenarios = grid.scenarios()
    assert scenarios[0]["name"] == BASELINE and scenarios[0]["changed"] == []
    assert len({s["name"] for s in scenarios}) == len(scenarios)
    expected = 1 + sum(len([v for v in grid.levels[f] if v != grid.baseline[f]]) for f in FACTORS)
    assert len(scenarios) == expected <= 16
    for s in scenarios[1:]:
        differs = [f for f in FACTORS if s[f] != grid.baseline[f]]
        assert differs == s["changed"] and len(differs) == 1
    # the factors of models/sensitivity.toml are all there
    assert set(grid.levels["bias"]) == {"no_bias", "variance_inflation", "design_hierarchy",
                                        "high_rob_excluded", "inferred_benefit_included"}  # + the appraisal rules' alternatives
    assert grid.levels["estimand"] == ["tot"] and grid.levels["direction_only"] == ["out"]


def test_factorial_grid_crosses_every_level():
    from dataclasses import replace

    grid = replace(load_grid().with_levels(tau=["halfnormal(0.2)"], bias=["no_bias", "variance_inflation"],
                                           inclusion=[], estimand=["tot"], direction_only=[]), mode="factorial")
    assert len(grid.scenarios()) == 2 * 3 * 1 * 2 * 1


def test_unknown_levels_are_refused_with_one_problem_each():
    with pytest.raises(InputError) as err:
        load_grid().with_levels(tau=["normal(0, 1)"], bias=["no_such_model"], inclusion=["nope"], estimand=["att"])
    fields = sorted(p.record for p in err.value.problems)
    assert fields == ["bias", "estimand", "inclusion", "tau"]


def test_scenario_spec_sets_tau_designs_and_direction_only():
    grid = load_grid()
    s = {"name": "x", "changed": [], "tau": "halfnormal(1.0)", "bias": "no_bias", "inclusion": "randomised_matched",
         "estimand": "itt", "direction_only": "out"}
    spec = scenario_spec(s, grid)
    assert spec.priors["tau"] == parse_prior("halfnormal(1.0)")
    assert spec.bias_mode == "none"
    assert spec.designs == ("rct", "matched_register")
    assert spec.direction_only == "exclude"
    base = scenario_spec(grid.scenarios()[0], grid)
    assert base.priors["tau"] == parse_prior("halfnormal(0.4)")  # models/default.toml's own
    assert "before_after" in base.designs and base.direction_only == "censored"


# --- the participation (TOT) switch in harmonise -------------------------------------------------


def test_estimand_tot_pools_participation_effects_instead_of_their_itts():
    itt = load_evidence()
    tot = load_evidence(estimand="tot")
    by_id = tot.set_index("estimate_id")
    pooled_tots = tot[(tot["estimand"] == "tot") & tot["poolable"]]
    assert len(pooled_tots) >= 3
    assert not (itt["estimand"] == "tot").pipe(lambda m: itt[m]["poolable"]).any()  # the default never pools a TOT
    for rec in pooled_tots.itertuples():
        partner = by_id.loc[f"{rec.project_id}:{rec.tot_of}"]
        assert not partner["poolable"] and "pooled in its place" in partner["exclusion_reason"]
    # a TOT on the domain's own metric enters at its reported value: flexjob is in percentage points
    flex = by_id.loc["oto:flexjob_tot"]
    assert flex["poolable"] and flex["yi"] == pytest.approx(flex["estimate"])
    assert flex["sei"] == pytest.approx((flex["ci_high"] - flex["ci_low"]) / (2 * 1.959964), rel=1e-4)
    # rows without a TOT partner are untouched
    untouched = ~itt["estimate_id"].isin(set(pooled_tots["estimate_id"]) | {f"{r.project_id}:{r.tot_of}" for r in pooled_tots.itertuples()})
    pd.testing.assert_series_equal(itt.loc[untouched, "yi"], tot.loc[untouched, "yi"])
    with pytest.raises(ValueError):
        load_evidence(estimand="att")


# --- verdicts and leave-one-out on hand-made numbers ---------------------------------------------


def _table(rows):
    cols = ["scenario", "domain", "mu_mean", "p_beneficial", "gate_passed", "error"]
    return pd.DataFrame([dict(zip(cols, r)) for r in rows], columns=cols)


def test_verdicts_separate_robust_class_change_and_sign_flip():
    table = _table([
        (BASELINE, "a", 0.3, 0.97, True, None), ("s1", "a", 0.25, 0.95, True, None), ("s2", "a", 0.4, 0.99, True, None),
        (BASELINE, "b", 0.3, 0.95, True, None), ("s1", "b", 0.1, 0.80, True, None), ("s2", "b", 0.4, 0.99, True, None),
        (BASELINE, "c", 0.1, 0.70, True, None), ("s1", "c", -0.1, 0.30, True, None), ("s2", "c", 0.2, 0.90, False, None),
        ("s3", None, None, None, None, "RuntimeError: boom"),
    ])
    v = verdicts(table, 0.9)
    assert v["a"].startswith("robust") and "1 scenario(s) failed" in v["a"]
    assert v["b"].startswith("sign robust, probability not") and "s1" in v["b"] and "s2" not in v["b"].split("under")[1]
    assert v["c"].startswith("NOT ROBUST") and "s1" in v["c"] and "gate failed in 1" in v["c"]


def test_loo_flags_sign_flips_and_moves_beyond_one_sd():
    baseline = {"domains": {"d": {"mu_mean": 0.2, "mu_sd": 0.1, "p_beneficial": 0.9, "projects": ["A", "B", "C"]},
                            "solo": {"mu_mean": 1.0, "mu_sd": 0.5, "p_beneficial": 0.95, "projects": ["A"]}}}
    loo = [
        {"project": "A", "ok": True, "error": None, "value": {"domains": {"d": {"mu_mean": -0.05, "p_beneficial": 0.4}}}},
        {"project": "B", "ok": True, "error": None, "value": {"domains": {"d": {"mu_mean": 0.35, "p_beneficial": 0.97}}}},
        {"project": "C", "ok": False, "error": "ValueError: x", "value": None},
    ]
    t = loo_table(baseline, loo).set_index(["domain", "project"])
    assert "sign flips" in t.loc[("d", "A"), "flag"] and "more than its posterior SD" in t.loc[("d", "A"), "flag"]
    assert t.loc[("d", "A"), "shift_in_sd"] == pytest.approx(-2.5)
    assert "sign" not in t.loc[("d", "B"), "flag"] and "SD" in t.loc[("d", "B"), "flag"]
    assert "refit failed" in t.loc[("d", "C"), "flag"]
    assert "only project" in t.loc[("solo", "A"), "flag"]


# --- fits: leave-one-out and power-scaling with known answers ------------------------------------

KNOWN_CSV = """study,yi,sei,domain,design,project
p1,-0.10,0.05,flip,rct,P1
p2,-0.10,0.05,flip,rct,P2
p3,1.20,0.03,flip,rct,P3
s1,0.20,0.10,solo,rct,P1
"""


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    path = tmp_path_factory.mktemp("known") / "known.csv"
    path.write_text(KNOWN_CSV)
    grid = load_grid().with_levels(tau=[], bias=[], inclusion=[], estimand=[], direction_only=[])
    return run_sensitivity(grid=grid, csv=path, settings={**FAST, "draws": 400, "tune": 400}, workers=2, progress=False)


@pytest.mark.mcmc
@pytest.mark.subprocess
def test_leave_one_out_finds_the_project_that_carries_the_sign(known):
    t = known.loo_table().set_index(["domain", "project"])
    assert known.baseline()["domains"]["flip"]["mu_mean"] > 0  # P3's large precise estimate pulls mu up
    assert "sign flips" in t.loc[("flip", "P3"), "flag"]
    assert t.loc[("flip", "P3"), "mu_mean_without"] < 0
    assert "only project" in t.loc[("solo", "P1"), "flag"]


@pytest.mark.mcmc
@pytest.mark.subprocess
def test_power_scaling_flags_the_single_project_tau_as_prior_driven(known):
    ps = known.power_scaling
    # one project: tau's posterior is its prior; the data cannot move it
    assert ps["solo"]["tau"]["diagnosis"] == "potential strong prior / weak likelihood"
    assert "driven by the prior" in ps["solo"]["plain"]
    assert ps["solo"]["tau"]["prior"] > 0.05 > ps["solo"]["tau"]["likelihood"]
    table = known.power_scaling_table()
    assert set(table["domain"]) == {"flip", "solo"}


# --- the same numbers wherever the fits run ------------------------------------------------------


def _small_grid():
    from dataclasses import replace

    grid = load_grid().with_levels(tau=[], bias=["no_bias"], inclusion=[], estimand=[], direction_only=[])
    return replace(grid, leave_one_out=False, power_scaling=False)


@pytest.fixture(scope="module")
def serial_run(mini_csv):
    grid = _small_grid()
    run_sensitivity(grid=grid, csv=mini_csv, settings=FAST, scheduler="serial", progress=False)  # warm compile caches
    return run_sensitivity(grid=grid, csv=mini_csv, settings=FAST, scheduler="serial", progress=False)


@pytest.mark.mcmc
def test_serial_run_covers_every_scenario_and_domain(serial_run):
    table = serial_run.table()
    assert table["error"].isna().all()
    assert sorted(table["scenario"].unique()) == sorted([BASELINE, "bias=no_bias"])
    assert set(table["domain"]) == {"jobs", "school"}
    assert (table["mu_hdi_low"] < table["mu_mean"]).all() and (table["mu_mean"] < table["mu_hdi_high"]).all()


@pytest.mark.mcmc
def test_two_worker_local_cluster_gives_exactly_the_serial_numbers(serial_run, mini_csv):
    cluster = run_sensitivity(grid=_small_grid(), csv=mini_csv, settings=FAST, workers=2, progress=False)
    assert [r["value"] for r in cluster.results] == [r["value"] for r in serial_run.results]
    assert len({r["worker"] for r in cluster.results}) >= 1
    pd.testing.assert_frame_equal(cluster.table(), serial_run.table(), check_exact=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def external_cluster(tmp_path):
    """A `dask scheduler` and one `dask worker` as separate processes on 127.0.0.1; killed afterwards."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    procs = []
    try:
        procs.append(subprocess.Popen([str(VENV_BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                       "--dashboard-address", ":0", "--no-show"], env=env, cwd=tmp_path,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen([str(VENV_BIN / "dask"), "worker", address, "--nworkers", "1", "--nthreads", "1",
                                       "--no-dashboard", "--death-timeout", "60", "--local-directory", str(tmp_path)],
                                      env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client

        deadline = time.monotonic() + 60
        with Client(address, timeout="30s") as client:
            while not client.scheduler_info()["workers"]:
                assert time.monotonic() < deadline, "the external dask worker did not connect"
                time.sleep(0.2)
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.mark.mcmc
def test_external_scheduler_through_the_cli_gives_the_serial_numbers(serial_run, mini_csv, external_cluster, tmp_path):
    from metaeval.cli import main

    out = tmp_path / "out"
    argv = ["sensitivity", "--csv", str(mini_csv), "--out", str(out), "--scheduler", external_cluster,
            "--bias", "no_bias", "--tau", "--inclusion", "--estimand", "--direction-only",
            "--no-loo", "--no-power-scaling", "--no-report", "--refit", "--format", "json",
            "--chains", str(FAST["chains"]), "--draws", str(FAST["draws"]), "--tune", str(FAST["tune"]), "--seed", str(FAST["seed"])]
    assert main(argv) == 0
    saved = json.loads((out / "sensitivity" / "sensitivity.json").read_text())
    assert [s["name"] for s in saved["scenarios"]] == [s["name"] for s in serial_run.scenarios]
    assert [r["value"] for r in saved["results"]] == [r["value"] for r in serial_run.results]
    assert {r["worker"].split(":")[1] for r in saved["results"]} != {str(os.getpid())}
    for name in ("sensitivity.csv", "verdicts.txt", "spec_curve_jobs.png", "spec_curve_school.png"):
        assert (out / "sensitivity" / name).is_file()
    assert not math.isnan(pd.read_csv(out / "sensitivity" / "sensitivity.csv")["mu_mean"].iloc[0])
