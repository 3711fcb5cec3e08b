"""`metaeval validate` and `metaeval evidence`: exit 0 on good evidence, 2 with a precise message on bad."""

import json
import shutil
from pathlib import Path

import pytest

from metaeval.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
MINI = FIXTURES / "mini"
PROJECT = "projects/demo.yaml"

# case -> (record, field, fragment of the message); "" means "not named" (file-level problems).
BROKEN = {
    "missing_field": ("project 'demo'", "design", "Field required"),
    "unknown_field": ("estimate 'hours_itt'", "estimat", "unknown field"),
    "wrong_type": ("estimate 'hours_itt'", "estimate", "valid number"),
    "unknown_design": ("project 'demo'", "design", "'quasi_experiment'"),
    "unknown_domain": ("estimate 'self_support'", "domain", "unknown domain 'happiness'"),
    "ci_excludes_estimate": ("estimate 'hours_itt'", "estimate", "outside its CI [25, 50]"),
    "p_value_disagrees_with_ci": ("estimate 'hours_itt'", "p_value", "reported p = 0.01"),
    "negative_sd": ("estimate 'hours_itt'", "sd_treatment", "greater than 0"),
    "share_above_100": ("estimate 'self_support'", "mean_treatment", "not a share between 0 and 100"),
    "duplicate_estimate_id": ("project 'demo'", "", "'hours_itt' is used twice"),
    "tot_names_missing_itt": ("project 'demo'", "", "tot_of names 'hours_ittt'"),
    "nan_value": ("estimate 'hours_itt'", "estimate", "finite number"),
    "infinite_value": ("estimate 'hours_itt'", "ci_high", "finite number"),
    "yaml_syntax_error": ("line 3", "", "invalid YAML"),
    "python_object_tag": ("line 2", "", "python/object"),
    "yaml_alias_bomb": ("line 5", "", "alias bomb"),
    "duplicate_key": ("line 3", "", "'name' appears twice"),
    "empty_file": ("", "", "file is empty"),
    "latin1_encoding": ("", "", "not UTF-8"),
    "id_not_file_name": ("project 'other_demo'", "id", "must match the file name"),
    "unpoolable_without_reason": ("estimate 'hours_tot'", "", "needs an exclusion_reason"),
    "ci_bounds_reversed": ("estimate 'hours_itt'", "", "ci_low (50.0) is above ci_high (-10.0)"),
    "tot_not_itt_over_take_up": ("estimate 'hours_tot'", "estimate", "is not ITT 20 / take-up 0.500"),
    "judgement_not_allowed": ("project 'demo'", "risk_of_bias.reporting.judgement", "'moderate'"),
    "not_a_mapping": ("", "", "expected a mapping"),
    # dependence (data/README.md "Dependence"): a part pooled beside its whole, two pooled rows of one sample
    "pooled_part_of_pooled_total": ("estimate 'self_support_wages'", "part_of", "is part of 'demo:self_support' and both are pooled"),
    "two_pooled_rows_of_one_sample": ("estimate 'self_support_wages'", "shared_sample", "same sample ('status_table') as 'demo:self_support'"),
    "part_exceeds_whole": ("estimate 'self_support_wages'", "mean_treatment", "35 exceeds 30 in 'demo:self_support'"),
    "part_of_unknown_estimate": ("project 'demo'", "", "part_of names 'self_supprt'"),
    "direction_contradicts_levels": ("estimate 'self_support'", "direction", "says decrease but the printed figures give +10"),
    "beneficial_without_basis": ("estimate 'self_support'", "", "needs a `benefit_basis`"),
}


def _evidence_dir(tmp_path: Path, project_file: Path) -> Path:
    shutil.copytree(MINI, tmp_path / "data")
    shutil.copy(project_file, tmp_path / "data" / PROJECT)
    return tmp_path / "data"


def test_corpus_is_complete():
    assert sorted(p.stem for p in (FIXTURES / "broken").glob("*.yaml")) == sorted(BROKEN)


def test_valid_mini_base(capsys):
    assert main(["validate", "--data", str(MINI)]) == 0
    out = capsys.readouterr().out
    assert "1 projects, 4 estimates (2 poolable with an SE, 1 direction-only, 1 not poolable" in out


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_fixture_exits_2_naming_file_record_field(case, tmp_path, capsys):
    data = _evidence_dir(tmp_path, FIXTURES / "broken" / f"{case}.yaml")
    assert main(["validate", "--data", str(data)]) == 2
    err = capsys.readouterr().err
    record, field, fragment = BROKEN[case]
    lines = [ln for ln in err.splitlines() if fragment in ln]
    assert lines, err
    line = lines[0]
    assert line.startswith(f"error: {data / PROJECT}:"), line
    if record:
        assert f"record {record}" in line, line
    if field:
        assert f"field {field}:" in line, line
    assert "Traceback" not in err


def test_all_problems_reported_in_one_run(tmp_path, capsys):
    data = _evidence_dir(tmp_path, FIXTURES / "broken" / "negative_sd.yaml")
    text = (data / PROJECT).read_text().replace("design: rct", "design: quasi")
    (data / PROJECT).write_text(text)
    assert main(["validate", "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert "field design" in err and "field sd_treatment" in err


BROKEN_CSV = {
    "study,yi\nA,1\n": ("header", "vi or sei", "missing column"),
    "study,yi,sei\nA,1,0\n": ("row 2 (study 'A')", "sei", "greater than 0"),
    "study,yi,sei\nA,nan,1\n": ("row 2 (study 'A')", "yi", "finite number"),
    "study,yi,sei\nA,1,1\nA,2,1\n": ("row 3 (study 'A')", "study", "duplicate study id"),
    "study,yi,vi,sei\nA,1,4,1\n": ("row 2 (study 'A')", "", "disagree"),
    "study,yi,vi,sei\nA,1,1,1e300\n": ("row 2 (study 'A')", "vi, sei", "sei² (inf) disagree"),  # was OverflowError (sei**2)
    "study,yi,sei,design\nA,1,1,anecdote\n": ("row 2 (study 'A')", "design", "unknown design 'anecdote'"),
    "study,yi,sei\n": ("", "", "no data rows"),
}


@pytest.mark.parametrize("text", sorted(BROKEN_CSV))
def test_broken_csv_exits_2(text, tmp_path, capsys):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    assert main(["validate", "--csv", str(path)]) == 2
    err = capsys.readouterr().err
    record, field, fragment = BROKEN_CSV[text]
    line = next(ln for ln in err.splitlines() if fragment in ln)
    assert line.startswith(f"error: {path}:")
    if record:
        assert f"record {record}" in line
    if field:
        assert f"field {field}:" in line


def test_csv_with_bom_and_moderators(tmp_path, capsys):
    path = tmp_path / "m.csv"
    path.write_bytes("\ufeffstudy,yi,vi,ablat\nA,-0.9,0.3,44\nB,-1.6,0.4,55\n".encode())
    assert main(["evidence", "--csv", str(path), "--format", "json", "--all-columns"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["estimate_id"] for r in rows] == ["A", "B"]
    assert rows[0]["sei"] == pytest.approx(0.3**0.5)
    assert rows[1]["mod_ablat"] == 55
    assert rows[0]["domain"] == "all"


def test_csv_export_defuses_spreadsheet_formulas(tmp_path, capsys):
    path = tmp_path / "f.csv"
    path.write_text("study,yi,sei\n=HYPERLINK(\"x\"),1,1\n")
    assert main(["evidence", "--csv", str(path), "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert "'=HYPERLINK" in out
    assert "\n=HYPERLINK" not in out


def test_every_bad_csv_row_is_reported_once_in_row_order(tmp_path, capsys):
    path = tmp_path / "bad.csv"
    path.write_text("study,yi,sei\nA,1,0.5\nB,x,0.2\nC,0.3,-1\nA,0.2,0.1\nD,0.1\nE,0.1,0.1\n\nE,0.2,0.3\n,0.1,0.1\nF,nan,0.1\nG,1,\n")
    assert main(["validate", "--csv", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: {path}: {line}" for line in (
        "record row 3 (study 'B'), field yi: Input should be a valid number, unable to parse string as a number (got 'x')",
        "record row 4 (study 'C'), field sei: Input should be greater than 0 (got '-1')",
        "record row 5 (study 'A'), field study: duplicate study id; first used on row 2",
        "record row 6: has 2 cells; the header has 3",
        "record row 9 (study 'E'), field study: duplicate study id; first used on row 7",
        "record row 10, field study: String should have at least 1 character (got '')",
        "record row 11 (study 'F'), field yi: Input should be a finite number (got 'nan')",
        "record row 12 (study 'G'), field vi, sei: needs vi or sei",
    )]


def test_csv_rows_are_checked_alike_across_blocks(tmp_path, capsys, monkeypatch):
    """Rows are checked a block at a time: blocks of 2 rows name the same problems as one block (duplicate ids across blocks too)."""
    from metaeval import evidence_csv

    path = tmp_path / "bad.csv"
    path.write_text("study,yi,sei,domain\nA,1,0.5,\nB,x,0.2,e\nC,0.3,-1,e\nA,0.2,0.1,\nD,0.1\nE,0.1,0.1,\n\nE,0.2,0.3,e\nF,nan,0.1,\nC,1,1,e\n")
    assert main(["validate", "--csv", str(path)]) == 2
    whole = capsys.readouterr().err
    monkeypatch.setattr(evidence_csv, "_BLOCK_ROWS", 2)
    assert main(["validate", "--csv", str(path)]) == 2
    assert capsys.readouterr().err == whole
    assert whole.count("duplicate study id") == 2 and whole.index("row 3") < whole.index("row 5") < whole.index("row 9") < whole.index("row 10")


def test_a_csvs_consistency_checks_are_the_row_by_row_checks(tmp_path):
    """csv_findings checks a CSV column by column; findings, the checks every evidence table gets, agree row by row."""
    from metaeval.consistency import csv_findings, findings
    from metaeval.evidence_csv import read_csv_table
    from metaeval.harmonise import _csv_rows, csv_domains

    path = tmp_path / "shares.csv"
    path.write_text("study,yi,sei,domain,metric\nA,0.4,0.1,emp,share\nB,-1.5,0.1,emp,share\nC,150,9,pp,pp\nD,-99,9,pp,pp\n"
                    "E,7,1,hours,hours\nF,1.01,0.2,emp,\n")
    table = read_csv_table(path)
    domains = csv_domains(table.domain, table.given, table.yi, table.sei, table.record, path)
    by_column = [f.problem for f in csv_findings(table, domains)]
    by_row = [f.problem for f in findings([dict(row) for row in _csv_rows(table, domains)])]
    assert [str(p) for p in by_column] == [str(p) for p in by_row]
    assert [(p.record, p.field) for p in by_column] == [("row 3 (study 'B')", "estimate"), ("row 4 (study 'C')", "estimate"),
                                                      ("row 7 (study 'F')", "estimate")]
