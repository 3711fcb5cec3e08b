"""Bad input of every kind exits 2 with a message naming file, record and field, and no traceback.

The corpus: committed files under tests/fixtures/bad_csv/, bad_models/ and bad_evidence/ (made by
tests/fixtures/make_bad_inputs.py), the 25 broken evidence files and 7 CSV strings of test_validate.py, and
the command-line cases below. Files named ``ok_*`` are hostile but acceptable input: each is accepted and a
test shows how it is made harmless (BOM read, Danish letters kept, formulas defused, HTML escaped).

Output-path policy (``metaeval.cli.check_output_paths``): no command writes under the evidence directory
(the bundled ``data/`` or ``--data DIR``); a relative ``--out``/``--output`` that resolves outside the
working folder (``..``, a symlink) is refused; an absolute path is the user's explicit choice and is used.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from metaeval.cli import main
from metaeval.evidence import default_data_dir

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parent.parent
EIGHT = FIXTURES / "eight_schools.csv"


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """main() in-process; argparse's own refusals (SystemExit 2) count as an exit status."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def assert_names(err: str, file: str, record: str, field: str, fragment: str) -> None:
    """One error line holds ``fragment`` and names the file, record and field it concerns ("" = not applicable)."""
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if fragment in ln]
    assert lines, f"no line with {fragment!r} in:\n{err}"
    line = lines[0]
    if file:
        assert line.startswith(f"error: {file}:"), line
    if record:
        assert f"record {record}" in line, line
    if field:
        assert f"field {field}" in line or f"argument {field}" in line, line


# --- metafor-style CSVs --------------------------------------------------------------------------------------

CSV_CASES = {
    # name: (record, field, fragment of the message); "" = the problem is about the whole file
    "missing_variance_column": ("header", "vi or sei", "missing column"),
    "missing_study_column": ("header", "study", "missing column"),
    "wrong_type_yi": ("row 2 (study 'A')", "yi", "valid number"),
    "danish_decimal_comma": ("row 2 (study 'A')", "yi", "got '0,5'"),
    "nan_yi": ("row 2 (study 'A')", "yi", "finite number"),
    "infinite_sei": ("row 2 (study 'A')", "sei", "finite number"),
    "negative_infinite_yi": ("row 2 (study 'A')", "yi", "finite number"),
    "overflow_yi": ("row 2 (study 'A')", "yi", "finite number"),
    "zero_sei": ("row 2 (study 'A')", "sei", "greater than 0"),
    "negative_sei": ("row 2 (study 'A')", "sei", "greater than 0"),
    "zero_vi": ("row 2 (study 'A')", "vi", "greater than 0"),
    "negative_vi": ("row 2 (study 'A')", "vi", "greater than 0"),
    "vi_sei_disagree": ("row 2 (study 'A')", "vi, sei", "disagree"),
    "no_variance_value": ("row 2 (study 'A')", "vi, sei", "needs vi or sei"),
    "duplicate_study": ("row 3 (study 'A')", "study", "duplicate study id"),
    "unknown_design": ("row 2 (study 'A')", "design", "unknown design 'quasi_experiment'"),
    "blank_study": ("row 2", "study", "at least 1 character"),
    "empty": ("", "", "file is empty"),
    "whitespace_only": ("", "", "file is empty"),
    "header_only": ("", "", "no data rows"),
    "ragged_row": ("row 3", "", "has 2 cells; the header has 3"),
    "unterminated_quote": ("row 2", "", "has 1 cells"),
    "duplicate_header": ("header", "yi", "appears twice"),
    "latin1_danish": ("", "", "not UTF-8 text (byte 0xc6"),
    "binary_garbage": ("", "", "not UTF-8 text"),
}
CSV_OK = ["ok_bom", "ok_danish_utf8", "ok_formula_cells", "ok_script_project"]


def test_csv_corpus_is_complete():
    assert sorted(p.stem for p in (FIXTURES / "bad_csv").glob("*.csv")) == sorted([*CSV_CASES, *CSV_OK])


@pytest.mark.parametrize("case", sorted(CSV_CASES))
def test_bad_csv_exits_2_naming_file_row_and_column(case, capsys):
    path = FIXTURES / "bad_csv" / f"{case}.csv"
    rc, out, err = run(["validate", "--csv", path], capsys)
    assert rc == 2, err
    assert_names(err, str(path), *CSV_CASES[case])
    # the fitting commands read input the same way: same refusal before any model is built
    rc, _, err = run(["fit", "--engine", "exact", "--csv", path, "--format", "json"], capsys)
    assert rc == 2 and CSV_CASES[case][2] in err and "Traceback" not in err


def test_csv_with_bom_is_read(capsys):

    rc, out, err = run(["evidence", "--csv", FIXTURES / "bad_csv" / "ok_bom.csv", "--format", "json"], capsys)
    assert rc == 0, err
    assert [r["estimate_id"] for r in json.loads(out)] == ["A", "B"]  # not "\ufeffstudy" as a header


def test_danish_letters_in_utf8_survive(capsys):

    rc, out, err = run(["evidence", "--csv", FIXTURES / "bad_csv" / "ok_danish_utf8.csv", "--format", "json"], capsys)
    assert rc == 0, err
    rows = json.loads(out)
    assert {r["estimate_id"] for r in rows} == {"Ærø", "Sø"}
    assert {r["project_id"] for r in rows} == {"Ærø kommune", "Søby"}


def _csv_text_cells(text: str) -> list[str]:
    import csv
    import io

    cells = [c for row in csv.reader(io.StringIO(text)) for c in row]

    def number(c: str) -> bool:
        try:
            float(c)
            return True
        except ValueError:
            return False

    return [c for c in cells if c and not number(c)]


@pytest.mark.parametrize("command", [["evidence", "--format", "csv", "--all-columns"], ["fit", "--engine", "exact", "--format", "csv"], ["classic", "--format", "csv"]])
def test_formula_cells_are_defused_in_every_csv_export(command, tmp_path, monkeypatch, capsys):
    """=, +, -, @ at the start of a name would run as a spreadsheet formula; exports prefix them with '."""
    monkeypatch.chdir(tmp_path)  # fit writes its summary to ./metaeval-out
    rc, out, err = run([*command, "--csv", FIXTURES / "bad_csv" / "ok_formula_cells.csv"], capsys)
    assert rc == 0, err
    text_cells = _csv_text_cells(out)
    assert any(c.startswith("'@SUM") for c in text_cells), out  # the domain name made it, defused
    live = [c for c in text_cells if c.startswith(("=", "+", "-", "@"))]
    assert not live, live


def test_script_in_a_project_name_is_escaped_in_the_report(tmp_path, capsys):
    html_path = tmp_path / "r.html"
    rc, out, err = run(["report", "--engine", "exact", "--csv", FIXTURES / "bad_csv" / "ok_script_project.csv", "--output", html_path], capsys)
    assert rc == 0, err
    html = html_path.read_text(encoding="utf-8")
    assert "<script>alert(1)" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


# --- evidence YAML (beyond tests/fixtures/broken) ------------------------------------------------------------

EVIDENCE_CASES = {
    "zero_se": ("estimate 'hours_tot'", "se", "greater than 0"),
    "negative_se": ("estimate 'hours_tot'", "se", "greater than 0"),
    "danish_decimal_comma": ("estimate 'hours_itt'", "estimate", "got '20,5'"),
    "negative_group_size": ("estimate 'hours_itt'", "n_treatment", "greater than 0"),
    "p_value_above_one": ("estimate 'hours_itt'", "p_value", "less than or equal to 1"),
}
EVIDENCE_OK = ["ok_bom", "ok_script_in_name"]


def _evidence_dir(tmp_path: Path, project_file: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(FIXTURES / "mini", data)
    shutil.copy(project_file, data / "projects" / "demo.yaml")
    return data


def test_evidence_corpus_is_complete():
    assert sorted(p.stem for p in (FIXTURES / "bad_evidence").glob("*.yaml")) == sorted([*EVIDENCE_CASES, *EVIDENCE_OK])


@pytest.mark.parametrize("case", sorted(EVIDENCE_CASES))
def test_bad_evidence_exits_2_naming_file_record_field(case, tmp_path, capsys):
    data = _evidence_dir(tmp_path, FIXTURES / "bad_evidence" / f"{case}.yaml")
    rc, _, err = run(["validate", "--data", data], capsys)
    assert rc == 2, err
    assert_names(err, str(data / "projects" / "demo.yaml"), *EVIDENCE_CASES[case])


def test_evidence_with_bom_is_read(tmp_path, capsys):
    rc, out, err = run(["validate", "--data", _evidence_dir(tmp_path, FIXTURES / "bad_evidence" / "ok_bom.yaml")], capsys)
    assert rc == 0, err


def test_script_in_a_project_name_is_escaped_in_the_report_from_yaml(tmp_path, capsys):
    data = _evidence_dir(tmp_path, FIXTURES / "bad_evidence" / "ok_script_in_name.yaml")
    html_path = tmp_path / "out" / "r.html"
    rc, _, err = run(["report", "--engine", "exact", "--data", data, "--output", html_path], capsys)
    assert rc == 0, err
    html = html_path.read_text(encoding="utf-8")
    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; trial" in html


# --- model TOML files --------------------------------------------------------------------------------------

MODEL_CASES = {
    "toml_syntax_error": ("", "", "not valid TOML"),
    "toml_unclosed_string": ("", "", "not valid TOML"),
    "unknown_table": ("", "prior", "unknown table"),
    "unknown_key": ("priors", "sigma", "unknown key"),
    "bad_prior_text": ("priors", "tau", "expected DIST(args)"),
    "unknown_family": ("priors", "tau", "unknown distribution 'gamma'"),
    "wrong_arity": ("priors", "mu", "takes 2 argument(s)"),
    "non_numeric_argument": ("priors", "mu", "arguments must be numbers"),
    "nan_scale": ("priors", "tau", "must be finite"),
    "negative_scale": ("priors", "tau", "sigma must be positive, got -0.4"),
    "zero_scale": ("priors", "omega", "sigma must be positive, got 0"),
    "tau_not_positive": ("priors", "tau", "expected a positive distribution"),
    "prior_wrong_type": ("priors", "mu", "got 5"),
    "negative_bias_sd": ("bias.designs", "matched_register", "sigma must be positive"),
    "unknown_design_in_bias_table": ("bias.designs", "quasi_experiment", "expected a non-randomised design"),
    "bias_prior_not_normal": ("bias.designs", "before_after", "must be normal(mean, sd)"),
    "unknown_bias_mode": ("bias", "mode", "'multiplicative'"),
    "weight_out_of_range": ("bias.weights", "single_arm", "weight in (0, 1]"),
    "weight_wrong_type": ("bias.weights", "single_arm", "got 'half'"),
    "unknown_design_in_data": ("data", "designs", "expected a non-empty list"),
    "target_accept_wrong_type": ("sampler", "target_accept", "got 'high'"),
    "target_accept_nan": ("sampler", "target_accept", "got nan"),
    "hdi_prob_above_one": ("summary", "hdi_prob", "got 1.5"),
    "name_wrong_type": ("", "name", "expected a string"),
    "table_not_a_table": ("priors", "", "expected a table"),
    "direction_only_bad_se": ("direction_only", "se", "sigma must be positive"),
    "latin1_name": ("", "", "not UTF-8 text (byte 0xc6"),
}


def test_model_corpus_is_complete():
    assert sorted(p.stem for p in (FIXTURES / "bad_models").glob("*.toml")) == sorted([*MODEL_CASES, "ok_bom"])


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_bad_model_file_exits_2_naming_file_table_key(case, tmp_path, capsys):
    path = FIXTURES / "bad_models" / f"{case}.toml"
    rc, out, err = run(["fit", "--engine", "exact", "--csv", EIGHT, "--model", path, "--out", tmp_path], capsys)
    assert rc == 2, err
    assert out == ""
    assert_names(err, str(path), *MODEL_CASES[case])


def test_model_file_with_bom_is_read(tmp_path, capsys):

    rc, out, err = run(["fit", "--engine", "exact", "--csv", EIGHT, "--model", FIXTURES / "bad_models" / "ok_bom.toml", "--format", "json",
                        "--out", tmp_path], capsys)
    assert rc == 0, err
    model = json.loads(out)["model"]
    assert model["priors"]["mu"] == "normal(0, 2)"


# --- command-line arguments ---------------------------------------------------------------------------------

# id: (arguments after the command, expected file ("" = don't check), field, fragment); {csv}, {tmp}, {data}
# are filled in. Fits use --engine exact unless the check happens before any sampling.
CLI_CASES = {
    "prior_without_equals": (["fit", "--csv", "{csv}", "--engine", "exact", "--prior", "tau"], "--prior", "", "expected PARAM=DIST(args)"),
    "prior_negative_scale": (["fit", "--csv", "{csv}", "--engine", "exact", "--prior", "tau=halfnormal(-1)"], "--prior", "", "sigma must be positive"),
    "prior_not_positive": (["fit", "--csv", "{csv}", "--engine", "exact", "--prior", "tau=normal(0,1)"], "--prior", "tau", "positive distribution"),
    "prior_unknown_parameter": (["fit", "--csv", "{csv}", "--engine", "exact", "--prior", "sigma=normal(0,1)"], "--prior", "sigma", "unknown parameter"),
    "prior_unknown_domain": (["fit", "--csv", "{csv}", "--engine", "exact", "--prior", "mu.happiness=normal(0,1)"], "--prior", "mu", "no domain 'happiness'"),
    "prior_unclosed": (["fit", "--csv", "{csv}", "--engine", "exact", "--prior", "tau=halfnormal(0.2"], "--prior", "", "expected DIST(args)"),
    "prior_on_rct_bias": (["fit", "--csv", "{csv}", "--engine", "exact", "--prior", "bias.rct=normal(0,1)"], "--prior", "bias.rct", "carries no bias term"),
    "prior_nan": (["fit", "--csv", "{csv}", "--engine", "exact", "--prior", "mu=normal(nan,1)"], "--prior", "", "must be finite"),
    "chains_zero": (["fit", "--csv", "{csv}", "--chains", "0", "--out", "{tmp}/o"], "command line", "--chains", "must be at least 1"),
    "draws_negative": (["fit", "--csv", "{csv}", "--draws", "-5", "--out", "{tmp}/o"], "command line", "--draws", "must be at least 1"),
    "tune_negative": (["fit", "--csv", "{csv}", "--tune", "-1", "--out", "{tmp}/o"], "command line", "--tune", "must be at least 0"),
    "seed_negative": (["fit", "--csv", "{csv}", "--seed", "-1", "--out", "{tmp}/o"], "command line", "--seed", "must be an integer from 0"),
    "seed_too_large": (["fit", "--csv", "{csv}", "--seed", str(2**70), "--out", "{tmp}/o"], "command line", "--seed", "must be an integer from 0"),
    "chains_not_a_number": (["fit", "--csv", "{csv}", "--chains", "abc"], "", "--chains", "invalid int value"),
    "format_unknown": (["fit", "--csv", "{csv}", "--format", "xml"], "", "--format", "invalid choice"),
    "command_unknown": (["fitt", "--csv", "{csv}"], "", "", "invalid choice"),
    "data_and_csv_together": (["validate", "--csv", "{csv}", "--data", "{data}"], "", "--data", "not allowed with"),
    "model_unknown_name": (["fit", "--csv", "{csv}", "--engine", "exact", "--model", "nosuch"], "nosuch", "--model", "no model named 'nosuch'"),
    "model_missing_file": (["fit", "--csv", "{csv}", "--engine", "exact", "--model", "{tmp}/missing.toml"], "{tmp}/missing.toml", "--model", "model file not found"),
    "model_is_a_folder": (["fit", "--csv", "{csv}", "--engine", "exact", "--model", "{tmp}/"], "", "--model", "not found"),
    "csv_missing": (["validate", "--csv", "{tmp}/missing.csv"], "{tmp}/missing.csv", "", "file not found"),
    "csv_is_a_folder": (["validate", "--csv", "{tmp}"], "{tmp}", "", "expected a file, found a directory"),
    "data_missing": (["validate", "--data", "{tmp}/nowhere"], "{tmp}/nowhere", "", "evidence directory not found"),
    "out_inside_bundled_data": (["fit", "--csv", "{csv}", "--engine", "exact", "--out", "{bundled}/out"], "{bundled}/out", "--out", "inside the evidence directory"),
    "out_is_bundled_data": (["run", "--engine", "exact", "--out", "{bundled}"], "{bundled}", "--out", "no command writes under data/"),
    "out_inside_given_data": (["fit", "--data", "{data}", "--engine", "exact", "--out", "{data}/projects"], "{data}/projects", "--out", "inside the evidence directory"),
    "report_output_inside_data": (["report", "--csv", "{csv}", "--engine", "exact", "--output", "{bundled}/r.html"], "{bundled}/r.html", "--output",
                                  "inside the evidence directory"),
    "plot_out_inside_data": (["plot", "forest", "--csv", "{csv}", "--domain", "all", "--out", "{bundled}/f.png"], "{bundled}/f.png", "--out", "inside the evidence directory"),
    "out_escapes_working_folder": (["fit", "--csv", "{csv}", "--engine", "exact", "--out", "../../escaped"], "../../escaped", "--out", "outside the working folder"),
    "out_escapes_by_symlink": (["fit", "--csv", "{csv}", "--engine", "exact", "--out", "link/out"], "link/out", "--out", "outside the working folder"),
    "out_is_a_file": (["fit", "--csv", "{csv}", "--engine", "exact", "--out", "{csv}"], "{csv}", "--out", "is an existing file"),
    "report_output_is_a_folder": (["report", "--csv", "{csv}", "--engine", "exact", "--output", "{tmp}"], "{tmp}", "--output", "is an existing folder"),
    "classic_level_above_one": (["classic", "--csv", "{csv}", "--level", "2"], "command line", "--level", "strictly between 0 and 1"),
    "classic_level_nan": (["classic", "--csv", "{csv}", "--level", "nan"], "command line", "--level", "strictly between 0 and 1"),
    "plot_wrong_suffix": (["plot", "forest", "--csv", "{csv}", "--domain", "all", "--out", "{tmp}/f.gif"], "{tmp}/f.gif", "--out", "must end in .png"),
    "plot_summary_missing": (["plot", "forest", "--csv", "{csv}", "--domain", "all", "--summary", "{tmp}/none.json", "--out", "{tmp}/f.png"],
                             "{tmp}/none.json", "", "no fit summary here"),
    "report_summary_not_json": (["report", "--csv", "{csv}", "--summary", "{csv}", "--output", "{tmp}/r.html"], "{csv}", "", "not a JSON fit summary"),
}


def _fill(args: list[str], values: dict[str, str]) -> list[str]:
    return [a.format(**values) for a in args]


@pytest.fixture
def cli_world(tmp_path, monkeypatch):
    """A working folder (the cwd) with a small CSV, an evidence dir, and a symlink leading out of it."""
    work = tmp_path / "work" / "deep"
    work.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (work / "link").symlink_to(elsewhere, target_is_directory=True)
    shutil.copy(EIGHT, work / "eight.csv")
    shutil.copytree(FIXTURES / "mini", work / "data")
    monkeypatch.chdir(work)
    return {"csv": str(work / "eight.csv"), "tmp": str(work), "data": str(work / "data"), "bundled": str(default_data_dir())}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_bad_command_line_exits_2_naming_the_option(case, cli_world, capsys):
    args, file, field, fragment = CLI_CASES[case]
    before = sorted(p.relative_to(cli_world["tmp"]) for p in Path(cli_world["tmp"]).rglob("*"))
    bundled_before = sorted(Path(cli_world["bundled"]).rglob("*"))
    rc, out, err = run(_fill(args, cli_world), capsys)
    assert rc == 2, (out, err)
    assert_names(err, file.format(**cli_world), "", field, fragment)
    # a refusal writes nothing: not in the working folder, not under data/, not through the symlink
    assert sorted(p.relative_to(cli_world["tmp"]) for p in Path(cli_world["tmp"]).rglob("*")) == before
    assert sorted(Path(cli_world["bundled"]).rglob("*")) == bundled_before
    assert not any((Path(cli_world["tmp"]).parent.parent / "elsewhere").iterdir())


def test_absolute_out_outside_the_working_folder_is_used_as_given(cli_world, tmp_path, capsys):
    target = tmp_path / "reports" / "r.html"
    rc, out, err = run(["report", "--csv", cli_world["csv"], "--engine", "exact", "--output", str(target)], capsys)
    assert rc == 0, err
    assert target.is_file() and out.strip() == str(target)


def test_relative_out_inside_the_working_folder_is_fine(cli_world, capsys):
    rc, out, err = run(["report", "--csv", cli_world["csv"], "--engine", "exact", "--output", "sub/../reports/r.html"], capsys)
    assert rc == 0, err
    assert (Path(cli_world["tmp"]) / "reports" / "r.html").is_file()


# --- the same refusals as real processes: exit status 2 and no traceback on stderr ----------------------------


@pytest.mark.parametrize("args", [
    ["validate", "--csv", str(FIXTURES / "bad_csv" / "latin1_danish.csv")],
    ["fit", "--engine", "exact", "--csv", str(EIGHT), "--model", str(FIXTURES / "bad_models" / "latin1_name.toml")],
    ["fit", "--csv", str(EIGHT), "--seed", str(2**70)],
    ["fit", "--csv", str(EIGHT), "--engine", "exact", "--out", "../../../../../../../../../tmp/x"],
    ["fit", "--csv", str(EIGHT), "--chains", "abc"],
], ids=["latin1_csv", "latin1_model", "seed_overflow", "out_escape", "argparse"])
@pytest.mark.subprocess
def test_subprocess_exit_2_without_traceback(args, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "metaeval.cli", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "error" in proc.stderr and proc.stdout == ""


# --- property-based: the spec loader, the --prior parser and harmonisation never crash or leak NaN ------------

import json  # noqa: E402
import math  # noqa: E402

import yaml  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from metaeval.errors import InputError  # noqa: E402
from metaeval.priors import Prior, PriorError, parse_assignment, parse_prior  # noqa: E402
from metaeval.spec import ModelSpec, load_spec, with_overrides  # noqa: E402

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_families = st.sampled_from(["normal", "halfnormal", "halfcauchy", "lognormal", "uniform", "studentt", "exponential", "flat", "gamma", "Normal"])
_numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-10, 10).map(str), st.text("0123456789.-e+ ", max_size=6))
prior_text = st.one_of(
    st.text(max_size=40),
    st.builds(lambda f, args, close: f"{f}({', '.join(args)}{')' if close else ''}", _families, st.lists(_numbers, max_size=4), st.booleans()),
)


@PROPS
@given(text=prior_text)
def test_prior_parser_never_crashes(text):
    try:
        prior = parse_prior(text)
    except PriorError as err:
        assert str(err)
    else:
        assert isinstance(prior, Prior) and all(math.isfinite(p) for p in prior.params)
        assert parse_prior(str(prior)).family == prior.family  # what it prints, it reads back


@PROPS
@given(name=st.one_of(st.text(max_size=15), st.sampled_from(["mu", "tau", "omega", "se", "mu.all", "tau.x", "bias.rct", "bias.single_arm", "bias.mean", "bias."])),
       prior=prior_text, sep=st.sampled_from(["=", " = ", "==", ":", ""]))
def test_prior_override_never_crashes(name, prior, sep):
    text = f"{name}{sep}{prior}"
    try:
        parse_assignment(text)
    except PriorError:
        pass
    try:
        spec = with_overrides(BASE_SPEC, [text])
    except InputError as err:
        assert err.problems and all(p.file == "--prior" and p.record == text for p in err.problems)
    else:
        assert isinstance(spec, ModelSpec) and spec.overrides


BASE_SPEC = load_spec("default")

_toml_scalar = st.one_of(
    st.text(max_size=25), prior_text, st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
    st.sampled_from(["additive", "variance_inflation", "hierarchical", "none", "censored", "exclude", "rct", "single_arm"]),
)
_toml_value = st.one_of(_toml_scalar, st.lists(_toml_scalar, max_size=3))
_keys = st.sampled_from(["mu", "tau", "omega", "mode", "designs", "weights", "hierarchy", "se", "target_accept", "hdi_prob",
                         "matched_register", "single_arm", "rct", "mean", "design_sd", "project_sd", "x"])
_tables = st.sampled_from(["priors", "bias", "bias.designs", "bias.weights", "bias.hierarchy", "direction_only", "data", "sampler", "summary", "other"])


def _toml_literal(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_literal(x) for x in v) + "]"
    return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}" for c in v) + '"'


@PROPS
@given(doc=st.dictionaries(_tables, st.dictionaries(_keys, _toml_value, max_size=4), max_size=5),
       top=st.dictionaries(st.sampled_from(["name", "description", "priors"]), _toml_value, max_size=2))
def test_model_spec_loader_never_crashes_on_structured_toml(tmp_path, doc, top):
    lines = [f"{k} = {_toml_literal(v)}" for k, v in top.items() if not (k == "priors" and "priors" in doc)]
    for table, body in doc.items():
        lines.append(f"[{table}]")
        lines += [f"{k} = {_toml_literal(v)}" for k, v in body.items() if f"{table}.{k}" not in doc]
    path = tmp_path / "m.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        spec = load_spec(path)
    except InputError as err:
        assert err.problems and all(p.file == str(path) for p in err.problems)
    else:
        assert spec.priors["tau"].support in ("positive", "interval") and 0 < spec.target_accept < 1


@PROPS
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_model_spec_loader_never_crashes_on_arbitrary_bytes(tmp_path, text):
    path = tmp_path / "m.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    try:
        load_spec(path)
    except InputError as err:
        assert err.problems and all(p.file == str(path) for p in err.problems)


_field_value = st.one_of(
    st.none(), st.floats(allow_nan=True, allow_infinity=True), st.floats(-1e300, 1e300), st.floats(1e-300, 1e-3),
    st.integers(-5, 10**6), st.sampled_from([0, 0.0, -0.0, 1e308, 5e-324, "1,5", ""]),
)
_NUMERIC_FIELDS = ["estimate", "se", "ci_low", "ci_high", "p_value", "mean_treatment", "sd_treatment", "mean_control", "sd_control", "n_treatment", "n_control"]
_MINI = yaml.safe_load((FIXTURES / "mini" / "projects" / "demo.yaml").read_text(encoding="utf-8"))


@PROPS
@given(values=st.fixed_dictionaries({}, optional={f: _field_value for f in _NUMERIC_FIELDS}),
       which=st.integers(0, 3), metric=st.sampled_from(["hours", "pp", "share", "smd", "grade"]),
       estimand=st.sampled_from(["itt", "difference", "pre_post"]))
def test_harmonise_never_returns_a_poolable_row_with_non_finite_yi_or_sei(tmp_path, values, which, metric, estimand):
    """Whatever numbers an estimate carries, a row marked poolable has a finite yi and a finite positive sei."""
    import copy

    from metaeval.harmonise import load_evidence

    doc = copy.deepcopy(_MINI)
    est = doc["estimates"][which]
    for f in _NUMERIC_FIELDS + ["direction", "significant", "tot_of"]:
        est.pop(f, None)
    if which == 1:
        est["estimand"] = estimand
    est.update({k: v for k, v in values.items() if v is not None}, metric=metric)
    if which != 1:
        est["estimand"] = estimand
    data = tmp_path / "data"
    if not data.exists():
        shutil.copytree(FIXTURES / "mini", data)
    (data / "projects" / "demo.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    try:
        table = load_evidence(data)
    except InputError as err:
        assert err.problems and all(p.file for p in err.problems)
        return
    pooled = table[table["poolable"].astype(bool) & ~table["direction_only"].fillna(False).astype(bool)]
    for _, row in pooled.iterrows():
        assert math.isfinite(float(row["yi"])) and math.isfinite(float(row["sei"])) and float(row["sei"]) > 0, row.to_dict()


@PROPS
@given(rows=st.lists(st.tuples(st.floats(allow_nan=True, allow_infinity=True), st.floats(allow_nan=True, allow_infinity=True), st.booleans()), min_size=1, max_size=5))
def test_csv_path_never_gives_a_poolable_row_with_non_finite_values(tmp_path, rows):
    from metaeval.harmonise import load_evidence

    lines = ["study,yi,sei,vi"] + [f"s{i},{y!r},{s!r}," if use_se else f"s{i},{y!r},,{s!r}" for i, (y, s, use_se) in enumerate(rows)]
    path = tmp_path / "x.csv"
    path.write_text("\n".join(lines) + "\n")
    try:
        table = load_evidence(csv=path)
    except InputError as err:
        assert all(p.file == str(path) for p in err.problems)
        return
    assert len(table) == len(rows)
    pooled = table[table["poolable"].astype(bool)]
    assert all(math.isfinite(y) for y in pooled["yi"]) and all(math.isfinite(s) and s > 0 for s in pooled["sei"])


# --- numerical edges: a valid fit with an honest note, or a clear refusal; never a silent NaN -------------------

EDGES = {
    "one_study": ([0.3], [0.1]),
    "two_studies": ([0.1, 0.5], [0.1, 0.2]),
    "identical_estimates": ([0.3, 0.3, 0.3], [0.1, 0.1, 0.1]),
    "se_from_1e-6_to_1e6": ([0.3, 0.1, 0.2], [1e-6, 1e6, 0.1]),
}


def _finite_summary(domain) -> None:
    """Every summary number of a domain (a DomainResult, or its JSON) is finite."""
    domain = domain if isinstance(domain, dict) else domain.model_dump()
    for q in ("mu", "tau", "theta_new"):
        for k in ("mean", "sd", "hdi_low", "hdi_high"):
            v = domain[q][k]
            assert isinstance(v, float | int) and math.isfinite(v), (q, k, v)
    for p in domain["projects"]:
        assert all(math.isfinite(p[k]) for k in ("mean", "sd", "hdi_low", "hdi_high")), p


@pytest.mark.parametrize("case", sorted(EDGES))
def test_edge_exact_engine(case, tmp_path, capsys):

    ys, ses = EDGES[case]
    csv = tmp_path / "e.csv"
    csv.write_text("study,yi,sei\n" + "".join(f"s{i},{y!r},{s!r}\n" for i, (y, s) in enumerate(zip(ys, ses))))
    rc, out, err = run(["fit", "--engine", "exact", "--csv", csv, "--format", "json", "--out", tmp_path], capsys)
    assert rc == 0, err
    summary = json.loads(out)  # json.loads would keep NaN; check every number is finite
    _finite_summary(summary["domains"]["all"])
    if case == "one_study":
        assert any("posterior equals its prior" in n for n in summary["domains"]["all"]["notes"])
    if case == "se_from_1e-6_to_1e6":  # the precise study pins its own effect; the imprecise one is pulled to the mean
        s0 = next(p for p in summary["domains"]["all"]["projects"] if p["project"] == "s0")
        assert s0["mean"] == pytest.approx(0.3, abs=1e-4)


@pytest.mark.mcmc
@pytest.mark.parametrize("case", sorted(EDGES))
def test_edge_mcmc(case):
    """Tiny fits (the gate will often fail at 100 draws): numbers must be finite and the gate's verdict explicit."""
    from _model_fixtures import csv_like

    from metaeval.errors import SamplingFailed
    from metaeval.model import build_model
    from metaeval.sampling import fit
    from metaeval.summary import summarise

    ys, ses = EDGES[case]
    table = csv_like(ys, ses, studies=[f"s{i}" for i in range(len(ys))])
    try:
        posterior = fit(build_model(table, BASE_SPEC), chains=2, draws=100, tune=100, seed=1, progress=False)
    except SamplingFailed as err:  # a clear refusal is acceptable; it must say why
        assert "non-finite" in str(err) or str(err)
        return
    summary = summarise(posterior)
    summary.to_json()  # allow_nan=False: would raise on NaN
    dom = summary.domains["all"]
    _finite_summary(dom)
    diag = summary.diagnostics
    assert diag.passed in (True, False) and (diag.passed or diag.failures)
    if case == "one_study":
        assert any("Only one project" in n for n in dom.notes)


@pytest.mark.mcmc
def test_domain_with_only_direction_only_findings(tmp_path):
    """The censored likelihood gives a fit (with a note naming the findings); the exact engine leaves them out, saying so."""
    import pandas as pd
    from _model_fixtures import csv_like

    from metaeval.exact import fit_exact
    from metaeval.model import build_model
    from metaeval.sampling import fit
    from metaeval.summary import summarise

    jobs = csv_like([0.1, 0.2], [0.1, 0.1], studies=["a", "b"], domain="jobs")
    finding = jobs.iloc[[0, 1]].assign(estimate_id=["f1", "f2"], project_id=["p1", "p2"], yi=math.nan, sei=math.nan, domain="health",
                                       direction_only=True, direction="increase", significant=[True, False], design="matched_register")
    table = pd.concat([jobs, finding], ignore_index=True)
    summary = summarise(fit(build_model(table, BASE_SPEC), chains=2, draws=100, tune=100, seed=1, progress=False))
    summary.to_json()
    health = summary.domains["health"]
    _finite_summary(health)
    assert any("direction-only finding(s)" in n and "f1" in n for n in health.notes)
    assert all(p.raw is None for p in health.projects)
    try:
        exact = fit_exact(table, priors=BASE_SPEC.priors, hdi_prob=0.95, overrides={})
    except InputError as err:
        assert any("direction" in p.message for p in err.problems)
    else:
        assert "health" not in exact.domains
        assert {x.estimate_id for x in exact.exclusions_in("health")} == {"f1", "f2"}  # named, not silently dropped
