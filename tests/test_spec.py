"""Model specs: the bundled TOML files, scaling, --prior overrides, and errors a user can act on."""

from __future__ import annotations

import tomllib

import pytest

from metaeval.errors import InputError
from metaeval.priors import parse_prior
from metaeval.spec import MODELS_DIR, available_models, load_spec

BUNDLED = ["default", "design_hierarchy", "no_bias", "rct_only", "variance_inflation"]


def _problems(excinfo) -> list:
    return excinfo.value.problems


def test_bundled_models_are_all_there_and_load():
    assert set(BUNDLED) <= set(available_models())
    modes = {name: load_spec(name).bias_mode for name in BUNDLED}
    assert modes == {
        "default": "additive",
        "design_hierarchy": "hierarchical",
        "no_bias": "none",
        "rct_only": "none",
        "variance_inflation": "variance_inflation",
    }
    assert load_spec("rct_only").designs == ("rct",)
    assert "before_after" in load_spec("default").designs


def test_toml_priors_are_multiplied_by_the_domain_scale():
    raw = tomllib.loads((MODELS_DIR / "default.toml").read_text())
    spec = load_spec("default")
    tau_relative = parse_prior(raw["priors"]["tau"])
    prior, scaled = spec.domain_prior("tau", "employment", 0.5)
    assert scaled
    assert prior.family == tau_relative.family
    assert prior.params[0] == pytest.approx(tau_relative.params[0] * 0.5)
    mu, _ = spec.domain_prior("mu", "self_support", 10.0)
    assert mu.params == pytest.approx((0.0, parse_prior(raw["priors"]["mu"]).params[1] * 10))
    bias, scaled = spec.bias_prior("before_after", 10.0)
    expected = parse_prior(raw["bias"]["designs"]["before_after"])
    assert scaled and bias.params == pytest.approx((expected.params[0] * 10, expected.params[1] * 10))


def test_no_bias_term_for_randomised_or_unspecified_designs():
    spec = load_spec("default")
    assert spec.bias_prior("rct", 1.0) is None
    assert spec.bias_prior("unspecified", 1.0) is None
    assert load_spec("no_bias").bias_prior("before_after", 1.0) is None


def test_overrides_are_absolute_and_per_domain_wins():
    spec = load_spec("default", ["tau=halfcauchy(5)", "tau.school=halfnormal(0.1)", "mu=normal(0, 5)"])
    prior, scaled = spec.domain_prior("tau", "employment", 0.5)
    assert (prior, scaled) == (parse_prior("halfcauchy(5)"), False)
    assert spec.domain_prior("tau", "school", 0.5) == (parse_prior("halfnormal(0.1)"), False)
    assert spec.domain_prior("mu", "x", 123.0) == (parse_prior("normal(0, 5)"), False)
    assert spec.to_dict()["overrides"] == {"mu": "normal(0, 5)", "tau": "halfcauchy(5)", "tau.school": "halfnormal(0.1)"}


def test_bias_overrides_by_design():
    spec = load_spec("default", ["bias.before_after=normal(0, 1)"])
    assert spec.bias_prior("before_after", 10.0) == (parse_prior("normal(0, 1)"), False)
    hier = load_spec("design_hierarchy", ["bias.design_sd=halfnormal(0.5)"])
    assert hier.hierarchy_prior("design_sd") == parse_prior("halfnormal(0.5)")


@pytest.mark.parametrize(
    "text, field, fragment",
    [
        ("kappa=normal(0, 1)", "kappa", "unknown parameter"),
        ("tau=normal(0, 1)", "tau", "positive distribution"),
        ("omega.school=normal(0, 1)", "omega.school", "positive distribution"),
        ("bias.rct=normal(0, 1)", "bias.rct", "carries no bias term"),
        ("bias.before_after=halfnormal(1)", "bias.before_after", "must be normal"),
        ("bias.design_sd=halfnormal(1)", "bias.design_sd", "hierarchical"),
        ("bias.colour=normal(0, 1)", "bias.colour", "unknown bias parameter"),
        ("tau=halfnormal(-1)", "", "must be positive"),
        ("tau halfnormal(1)", "", "PARAM=DIST"),
    ],
)
def test_bad_overrides_name_what_was_expected(text, field, fragment):
    with pytest.raises(InputError) as excinfo:
        load_spec("default", [text])
    (problem,) = _problems(excinfo)
    assert problem.file == "--prior"
    assert problem.record == text
    assert problem.field == field
    assert fragment in problem.message


def test_se_override_needs_the_censored_path(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('[direction_only]\nmode = "exclude"\n')
    with pytest.raises(InputError, match="direction-only"):
        load_spec(path, ["se=lognormal(0, 0.5)"])
    assert load_spec(path).direction_only == "exclude"


def test_unknown_model_name_lists_the_bundled_ones():
    with pytest.raises(InputError) as excinfo:
        load_spec("defualt")
    (problem,) = _problems(excinfo)
    assert problem.field == "--model"
    assert "default" in problem.message and "variance_inflation" in problem.message


def test_a_partial_user_file_inherits_from_default(tmp_path):
    path = tmp_path / "tight.toml"
    path.write_text('[priors]\ntau = "halfnormal(0.1)"\n')
    spec = load_spec(str(path))
    default = load_spec("default")
    assert spec.name == "tight"
    assert spec.priors["tau"] == parse_prior("halfnormal(0.1)")
    assert spec.priors["mu"] == default.priors["mu"]
    assert spec.bias_designs == default.bias_designs
    assert spec.digest() != default.digest()


@pytest.mark.parametrize(
    "content, record, field, fragment",
    [
        ('[prior]\nmu = "normal(0, 1)"\n', "", "prior", "unknown table"),
        ('[priors]\nsigma = "normal(0, 1)"\n', "priors", "sigma", "unknown key"),
        ('[priors]\ntau = "normal(0, 1)"\n', "priors", "tau", "positive distribution"),
        ('[priors]\nmu = "gauss(0, 1)"\n', "priors", "mu", "unknown distribution"),
        ('[bias]\nmode = "multiplicative"\n', "bias", "mode", "expected one of"),
        ('[bias]\nmode = "additive"\n[bias.designs]\nbefore_after = "normal(0.2, 0.4)"\n', "bias.designs", "single_arm", "missing"),
        ('[bias]\nmode = "variance_inflation"\n[bias.weights]\nbefore_after = 1.5\n', "bias.weights", "before_after", "(0, 1]"),
        ('[bias]\nmode = "hierarchical"\n[bias.hierarchy]\nmean = "normal(0, 1)"\n', "bias.hierarchy", "design_sd", "missing"),
        ('[direction_only]\nmode = "impute"\n', "direction_only", "mode", "expected one of"),
        ('[data]\ndesigns = ["rct", "cohort"]\n', "data", "designs", "non-empty list"),
        ('[data]\ninferred_benefit = "yes"\n', "data", "inferred_benefit", "expected one of exclude, include"),
        ('[risk_of_bias]\nhigh = "downweight"\n', "risk_of_bias", "high", "expected one of inflate, exclude, ignore"),
        ('[risk_of_bias]\nsd = -1\n', "risk_of_bias", "sd", "[0, 10)"),
        ('[risk_of_bias]\ndomains = ["blinding"]\n', "risk_of_bias", "domains", "drawn from confounding"),
        ("[sampler]\ntarget_accept = 1.2\n", "sampler", "target_accept", "(0, 1)"),
        ("[sampler]\ntarget_accept_integrated = 1\n", "sampler", "target_accept_integrated", "(0, 1)"),
        ("[summary]\nhdi_prob = 95\n", "summary", "hdi_prob", "(0, 1)"),
    ],
)
def test_bad_model_files_name_file_table_and_key(tmp_path, content, record, field, fragment):
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(InputError) as excinfo:
        load_spec(path)
    problems = _problems(excinfo)
    assert any(p.file == str(path) and p.record == record and p.field == field and fragment in p.message for p in problems), problems


def test_invalid_toml_is_an_input_error(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[priors\nmu = ")
    with pytest.raises(InputError, match="not valid TOML"):
        load_spec(path)


def test_missing_model_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_spec(tmp_path / "nope.toml")


def test_digest_is_stable_and_sensitive():
    assert load_spec("default").digest() == load_spec("default").digest()
    assert load_spec("default").digest() != load_spec("default", ["tau=halfnormal(0.3)"]).digest()
    assert load_spec("default").digest() != load_spec("no_bias").digest()


def test_a_mode_that_is_not_text_is_refused_not_crashed_on(tmp_path):
    # found by hypothesis: `mode = []` used to raise TypeError (unhashable) instead of an InputError
    from metaeval.errors import InputError
    from metaeval.spec import load_spec

    path = tmp_path / "m.toml"
    path.write_text('[bias]\nmode = []\n[direction_only]\nmode = {a = 1}\n')
    with pytest.raises(InputError) as err:
        load_spec(path)
    assert {(p.record, p.field) for p in err.value.problems} >= {("bias", "mode"), ("direction_only", "mode")}
