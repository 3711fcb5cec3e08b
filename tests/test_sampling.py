"""Sampling, determinism, the diagnostics gate, the cache and the fit/summary/run commands.

MCMC tests keep chains and draws small unless the check needs precision; the
eight-schools reference check is the one that needs many draws.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _model_fixtures import EIGHT_SCHOOLS_SE, EIGHT_SCHOOLS_Y, csv_like

from metaeval.certainty import judge
from metaeval.cli import main
from metaeval.model import build_model
from metaeval.sampling import SamplerSettings, fit, load_posterior
from metaeval.spec import load_spec
from metaeval.summary import fit_and_summarise, summarise

SMALL = SamplerSettings(chains=2, draws=300, tune=300, seed=3)
REPO = Path(__file__).resolve().parent.parent


def _eight_schools_csv(path: Path) -> Path:
    lines = ["study,yi,sei"] + [f"{chr(65 + i)},{y:g},{s:g}" for i, (y, s) in enumerate(zip(EIGHT_SCHOOLS_Y, EIGHT_SCHOOLS_SE))]
    path.write_text("\n".join(lines) + "\n")
    return path


def _run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "metaeval.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.mcmc
@pytest.mark.slow
def test_eight_schools_matches_posteriordb():
    """posteriordb eight_schools_noncentered reference: mu 4.41 (sd 3.31), tau 3.60 (sd 3.20)."""
    spec = load_spec("default", ["mu=normal(0,5)", "tau=halfcauchy(5)"])
    model = build_model(csv_like(EIGHT_SCHOOLS_Y, EIGHT_SCHOOLS_SE), spec)
    posterior = fit(model, chains=4, draws=5000, tune=1000, seed=2024, progress=False)
    s = summarise(posterior).domains["all"]
    assert s.mu.mean == pytest.approx(4.41, abs=0.15)
    assert s.tau.mean == pytest.approx(3.60, abs=0.2)
    assert s.mu.sd == pytest.approx(3.31, abs=0.15)
    assert s.tau.sd == pytest.approx(3.20, abs=0.3)
    assert s.project("A").mean > s.project("C").mean  # shrinkage keeps the order of raw effects here


@pytest.mark.mcmc
def test_same_seed_gives_byte_identical_json_and_another_seed_does_not():
    spec = load_spec("default")
    model = build_model(csv_like(EIGHT_SCHOOLS_Y, EIGHT_SCHOOLS_SE), spec)
    run = lambda seed: summarise(fit(model, chains=2, draws=200, tune=200, seed=seed, progress=False)).to_json()  # noqa: E731
    first, again, other = run(11), run(11), run(12)
    assert first == again
    assert first != other
    assert json.loads(first)["seed"] == 11


@pytest.mark.mcmc
def test_fit_returns_an_annotated_datatree():
    spec = load_spec("default")
    model = build_model(csv_like([0.1, 0.3, 0.2], [0.1, 0.2, 0.15]), spec)
    posterior = fit(model, chains=2, draws=100, tune=100, seed=1, progress=False)
    assert {"posterior", "sample_stats", "observed_data"} <= set(posterior.children)
    post = posterior["posterior"]
    assert post["mu"].dims == ("chain", "draw", "domain")
    assert list(post["theta_project"].coords["project_id"].values) == ["A", "B", "C"]
    settings = json.loads(posterior.attrs["metaeval_settings"])
    assert settings["target_accept"] == spec.target_accept and settings["seed"] == 1


@pytest.fixture
def compile_count(monkeypatch):
    """An empty compiled-sampler cache and a counter of compilations (each loads or builds a compile-cache entry)."""
    from metaeval import compile_cache, sampling

    calls = []
    original = compile_cache.compile_model
    monkeypatch.setattr(compile_cache, "compile_model", lambda model, **kwargs: calls.append(model) or original(model, **kwargs))
    monkeypatch.setattr(sampling, "_COMPILED", [])
    return calls


@pytest.mark.mcmc
def test_a_refit_with_other_data_and_prior_values_reuses_the_compiled_sampler_and_gives_fresh_draws(compile_count):
    from metaeval import sampling

    small = dict(chains=2, draws=100, tune=100, seed=5, progress=False)
    fit(build_model(csv_like([0.1, 0.3, 0.2], [0.1, 0.2, 0.15]), load_spec("default")), **small)
    other = lambda: build_model(csv_like([0.5, -0.2, 0.9], [0.3, 0.1, 0.2], studies=["X", "Y", "Z"]), load_spec("default", ["tau=halfnormal(2)"]))  # noqa: E731
    reused = fit(other(), **small)
    assert len(compile_count) == 1  # the second model differs only in its data containers
    sampling._COMPILED.clear()
    fresh = fit(other(), **small)
    assert len(compile_count) == 2
    a, b = reused["posterior"].to_dataset(), fresh["posterior"].to_dataset()
    assert set(a.data_vars) == set(b.data_vars)
    for name in a.data_vars:  # the new estimates, prior and initial point all took effect
        np.testing.assert_array_equal(a[name].values, b[name].values)
    assert list(a["theta_project"].coords["project"].values) == ["all/X", "all/Y", "all/Z"]
    np.testing.assert_array_equal(reused["observed_data"]["y"].values, [0.5, -0.2, 0.9])


@pytest.mark.mcmc
def test_a_model_of_another_structure_is_compiled_anew(compile_count):
    import pymc as pm

    small = dict(chains=2, draws=100, tune=100, seed=5, progress=False)
    table = csv_like([0.1, 0.3, 0.2], [0.1, 0.2, 0.15])
    fit(build_model(table, load_spec("default")), **small)
    fit(build_model(table, load_spec("default", ["tau=halfcauchy(1)"])), **small)  # another prior family
    assert len(compile_count) == 2
    extended = build_model(table, load_spec("default"))
    with extended:  # a researcher's extension is part of the structure
        pm.Normal("extra", 0.0, 1.0)
    posterior = fit(extended, **small)
    assert len(compile_count) == 3 and "extra" in posterior["posterior"]


def test_a_graph_reading_an_unnamed_shared_variable_is_never_reused():
    import pymc as pm
    import pytensor

    from metaeval.sampling import _structure

    hidden = pytensor.shared(np.array([1.0, 2.0]))
    with pm.Model() as model:
        x = pm.Normal("x", 0.0, 1.0, shape=2)
        pm.Normal("y", x * hidden, 1.0, observed=np.zeros(2))
    assert _structure(model) is None
    with pm.Model() as named:
        x = pm.Normal("x", 0.0, 1.0, shape=2)
        pm.Normal("y", x * pm.Data("scale", np.array([1.0, 2.0])), 1.0, observed=np.zeros(2))
    assert _structure(named) is not None


@pytest.mark.mcmc
def test_the_marginal_model_samples_at_its_integrated_target_only_where_no_project_effect_is_sampled(tmp_path):
    from metaeval.harmonise import load_evidence
    from metaeval.model import prepare

    marginal, default = load_spec("marginal"), load_spec("default")
    schools = csv_like(EIGHT_SCHOOLS_Y, EIGHT_SCHOOLS_SE)

    def target(table, spec, settings=None):
        return (settings or SamplerSettings()).resolved(spec, prepare(table, spec)).target_accept

    assert marginal.target_accept_integrated == 0.9 and default.target_accept_integrated is None
    assert target(schools, marginal) == 0.9  # every effect integrated out: the domain parameters alone are sampled
    assert target(load_evidence(), marginal) == marginal.target_accept == 0.995  # VIVE's findings keep sampled effects
    assert target(schools, default) == default.target_accept == 0.995
    assert target(schools, marginal, SamplerSettings(target_accept=0.8)) == 0.8  # one asked for wins
    result, _ = fit_and_summarise(schools, marginal, out=tmp_path, settings=SamplerSettings(chains=2, draws=300, tune=300, seed=2))
    assert result.model.sampler.target_accept == 0.9 and result.model.target_accept_integrated == 0.9


@pytest.mark.mcmc
def test_known_domain_mean_is_recovered():
    """Simulated evidence with known truth: 40 projects around mu = 0.3 (tau 0.1, SE 0.05)."""
    rng = np.random.default_rng(42)
    theta = 0.3 + 0.1 * rng.standard_normal(40)
    se = np.full(40, 0.05)
    table = csv_like(theta + se * rng.standard_normal(40), se, studies=[f"s{i:02d}" for i in range(40)])
    posterior = fit(build_model(table, load_spec("default")), chains=2, draws=500, tune=500, seed=5, progress=False)
    mu = summarise(posterior).domains["all"].mu.model_dump()
    assert mu["hdi_low"] < 0.3 < mu["hdi_high"]
    assert abs(mu["mean"] - 0.3) < 3 * mu["sd"]
    assert mu["sd"] == pytest.approx(0.11 / math.sqrt(40), rel=0.35)  # sqrt(tau^2 + se^2) / sqrt(k)


@pytest.mark.mcmc
def test_direction_only_finding_censored_or_left_out(tmp_path):
    rows = csv_like([0.05, 0.0], [0.1, 0.12], studies=["trial_a", "trial_b"], domain="jobs")
    finding = rows.iloc[[0]].assign(estimate_id="register", project_id="register", yi=math.nan, sei=math.nan,
                                     direction_only=True, direction="increase", significant=True, design="matched_register")
    table = pd.concat([rows, finding], ignore_index=True)
    exclude = tmp_path / "exclude.toml"
    exclude.write_text('[direction_only]\nmode = "exclude"\n')
    censored, _ = fit_and_summarise(table, load_spec("default"), out=tmp_path / "c", settings=SamplerSettings(chains=2, draws=500, tune=500, seed=1))
    left_out, _ = fit_and_summarise(table, load_spec(exclude), out=tmp_path / "e", settings=SamplerSettings(chains=2, draws=500, tune=500, seed=1))
    c, e = censored.domains["jobs"], left_out.domains["jobs"]
    assert c.project("register").raw is None and c.n_findings == 1
    assert any("censored likelihood" in n for n in c.notes)
    assert "register" not in {p.project for p in e.projects}
    assert [(x.estimate_id, x.stage) for x in left_out.exclusions] == [("register", "model")]
    # a significant increase pulls the domain mean up
    assert c.mu.mean > e.mu.mean
    assert c.mu.p_beneficial > e.mu.p_beneficial


@pytest.mark.mcmc
def test_cache_reuses_a_fit_and_keys_on_inputs(tmp_path):
    table = csv_like([0.1, 0.3, 0.2], [0.1, 0.2, 0.15])
    spec = load_spec("default")
    first, result = fit_and_summarise(table, spec, out=tmp_path, settings=SMALL)
    assert not result.cached
    for name in ("posterior.nc", "summary.json", "summary.csv", "fit.json"):
        assert (result.directory / name).is_file()
    assert (tmp_path / "summary.json").read_text() == first.to_json()
    assert not list(tmp_path.rglob("*.tmp"))
    mtime = (result.directory / "posterior.nc").stat().st_mtime_ns
    again, cached = fit_and_summarise(table, spec, out=tmp_path, settings=SMALL)
    assert cached.cached and cached.key == result.key and again == first
    assert (result.directory / "posterior.nc").stat().st_mtime_ns == mtime
    # the saved posterior reads back and summarises to the same numbers
    # (the fit folder keeps the engine's result; the output folder's is judged against the evidence too)
    assert judge(summarise(load_posterior(result.directory / "posterior.nc")), table).to_json() == first.to_json()
    from metaeval.model import prepare
    from metaeval.sampling import cache_key

    layout = prepare(table, spec)
    key = cache_key(layout, spec, SMALL)
    assert key == result.key
    assert cache_key(layout, spec, SamplerSettings(chains=2, draws=300, tune=300, seed=4)) != key
    assert cache_key(layout, load_spec("default", ["tau=halfnormal(0.3)"]), SMALL) != key
    assert cache_key(prepare(csv_like([0.1, 0.3, 0.25], [0.1, 0.2, 0.15]), spec), spec, SMALL) != key


@pytest.mark.subprocess
@pytest.mark.slow
def test_cli_fit_then_summary_without_refitting(tmp_path):
    csv = _eight_schools_csv(tmp_path / "eight.csv")
    common = ["--csv", str(csv), "--out", str(tmp_path / "out"), "--chains", "2", "--draws", "400", "--tune", "400", "--allow-failed-gate", "--seed", "9"]
    fitted = _run_cli("fit", *common, "--format", "json", cwd=tmp_path)
    assert fitted.returncode == 0, fitted.stderr
    data = json.loads(fitted.stdout)
    assert data["engine"] == "mcmc" and data["seed"] == 9 and set(data["domains"]) == {"all"}
    # summary answers from the cache and never imports PyMC
    code = (
        "import sys; from metaeval.cli import main; "
        f"rc = main(['summary', *{common!r}, '--format', 'json']); "
        "assert 'pymc' not in sys.modules, 'summary imported pymc'; sys.exit(rc)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    summary = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert summary.returncode == 0, summary.stderr
    assert summary.stdout == fitted.stdout
    csv_out = _run_cli("summary", *common, "--format", "csv", cwd=tmp_path)
    frame = pd.read_csv(pd.io.common.StringIO(csv_out.stdout))
    assert set(frame["quantity"]) == {"mu", "tau", "theta_new", "project"}
    # a summary for inputs never fitted says so
    missing = _run_cli("summary", *common[:-1], "10", cwd=tmp_path)
    assert missing.returncode == 1 and "run `metaeval fit`" in missing.stderr


@pytest.mark.mcmc
def test_a_failed_gate_is_an_exit_status_unless_allowed(tmp_path, capsys):
    from metaeval.commands import GATE_FAILED

    csv = _eight_schools_csv(tmp_path / "eight.csv")
    args = ["fit", "--csv", str(csv), "--out", str(tmp_path / "out"), "--chains", "2", "--draws", "30", "--tune", "30", "--format", "json"]
    assert main(args) == GATE_FAILED == 3  # the result is printed and written, marked as failed
    captured = capsys.readouterr()
    assert json.loads(captured.out)["diagnostics"]["passed"] is False
    assert "diagnostics gate FAILED" in captured.err
    # eight schools under the default model is the one-level model: the advice points at the exact engine
    assert "--engine exact" in captured.err
    assert main([*args, "--allow-failed-gate"]) == 0  # same inputs: served from the cache, still failing
    assert "diagnostics gate FAILED" in capsys.readouterr().err


@pytest.mark.mcmc
def test_a_failed_gate_on_a_model_without_an_exact_form_advises_sampling_longer(tmp_path, capsys):
    csv = tmp_path / "designs.csv"
    csv.write_text("study,yi,sei,design\na,0.1,0.1,rct\nb,0.3,0.2,before_after\nc,0.2,0.15,rct\n", encoding="utf-8")
    args = ["fit", "--csv", str(csv), "--out", str(tmp_path / "out"), "--chains", "2", "--draws", "30", "--tune", "30",
            "--model", "design_hierarchy"]
    assert main(args) == 3
    err = capsys.readouterr().err
    assert "more --draws/--tune or another --seed" in err and "--engine exact" not in err  # a learned design level: no exact form


def test_bad_prior_on_the_command_line_exits_2(tmp_path, capsys):
    csv = _eight_schools_csv(tmp_path / "eight.csv")
    assert main(["fit", "--csv", str(csv), "--prior", "tau=normal(0,1)", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--prior" in err and "positive distribution" in err
    assert main(["fit", "--csv", str(csv), "--model", "nonexistent", "--out", str(tmp_path)]) == 2


def test_exact_engine_is_dispatched(tmp_path, capsys):
    csv = _eight_schools_csv(tmp_path / "eight.csv")
    rc = main(["fit", "--engine", "exact", "--csv", str(csv), "--prior", "mu=normal(0,5)", "--prior", "tau=halfcauchy(5)", "--format", "json", "--out", str(tmp_path)])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["engine"] == "exact"
    assert data["domains"]["all"]["mu"]["mean"] == pytest.approx(4.41, abs=0.05)


@pytest.mark.mcmc
@pytest.mark.slow
def test_pymc_sampler_is_an_option():
    model = build_model(csv_like([0.1, 0.3, 0.2], [0.1, 0.2, 0.15]), load_spec("default"))
    posterior = fit(model, chains=1, draws=100, tune=100, seed=1, sampler="pymc", progress=False)
    assert posterior["posterior"].sizes["draw"] == 100
    assert json.loads(posterior.attrs["metaeval_settings"])["sampler"] == "pymc"


@pytest.mark.mcmc
@pytest.mark.slow
def test_run_on_the_bundled_evidence_passes_the_gate(tmp_path, capsys):
    rc = main(["run", "--out", str(tmp_path), "--format", "json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    data = json.loads(captured.out)
    assert data["diagnostics"]["passed"], data["diagnostics"]
    assert "valid" in captured.err  # the validation report goes to stderr when stdout is JSON
    for domain in data["domains"].values():
        assert domain["projects"] and domain["designs"] and domain["certainty"]["level"]
        assert sum(domain["designs"].values()) == domain["n_estimates"]
    table = main(["summary", "--out", str(tmp_path), "--format", "table"])
    assert table == 0
    text = capsys.readouterr().out
    assert "rests on" in text and "diagnostics gate passed" in text


@pytest.mark.mcmc
@pytest.mark.slow
@pytest.mark.parametrize("name", ["no_bias", "rct_only", "variance_inflation", "design_hierarchy"])
def test_every_bundled_model_samples_and_summarises(name):
    from _model_fixtures import bundled_like

    spec = load_spec(name)
    posterior = fit(build_model(bundled_like(), spec), chains=2, draws=100, tune=100, seed=1, progress=False)
    summary = summarise(posterior)
    assert summary.model.name == name
    designs = {d for dom in summary.domains.values() for d in dom.designs}
    if name == "rct_only":
        assert designs == {"rct"}
    else:
        assert "before_after" in designs
    if name == "design_hierarchy":
        assert posterior["posterior"]["bias_design"].dims[-1] == "design"
    if name in ("no_bias", "variance_inflation"):
        assert "bias" not in posterior["posterior"]
