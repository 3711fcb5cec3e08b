"""The bundled evidence through the command line: what `metaeval evidence` promises (README, "The command line")."""

import io
import json
from pathlib import Path

import pandas as pd
import pytest

from metaeval.cli import main

DATA = Path(__file__).resolve().parents[1] / "data"
PROJECT_IDS = {
    "oto", "vive_social_support", "drc_sib", "cph_cfbu_outreach", "cph_mploy_local", "cph_mjolnerparken",
    "cph_tingbjerg_urbanplanen", "cph_tingbjerg_family", "cph_perspektiv", "assens_job_familie",
}
DESIGN_COLUMNS = (
    "project_id, design, outcome, domain, population, estimand, metric, estimate, se, ci_low, ci_high, p_value, "
    "n_treatment, n_control, direction, yi, sei, poolable, exclusion_reason, source"
).split(", ")


def test_validate_bundled_evidence_exits_0(capsys):
    assert main(["validate"]) == 0
    out = capsys.readouterr().out
    assert "10 projects" in out and "acknowledged" in out


def test_evidence_csv_has_all_projects_and_columns(capsys):
    assert main(["evidence", "--format", "csv"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert set(DESIGN_COLUMNS) <= set(table.columns)
    assert set(table["project_id"]) == PROJECT_IDS
    unpoolable = table[~table["poolable"]]
    assert unpoolable["exclusion_reason"].notna().all()


def test_itt_and_tot_of_one_outcome_never_both_pooled(capsys):
    assert main(["evidence", "--format", "json", "--all-columns"]) == 0
    rows = {r["estimate_id"]: r for r in json.loads(capsys.readouterr().out)}
    tots = [r for r in rows.values() if r["estimand"] == "tot"]
    assert len(tots) >= 10
    for tot in tots:
        itt = rows[f"{tot['project_id']}:{tot['tot_of']}"]
        assert not (tot["poolable"] and itt["poolable"])


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("argv", [["validate"], ["evidence", "--format", "csv"], ["classic", "--format", "json"]])
def test_no_command_writes_under_data(argv, capsys):
    before = _snapshot(DATA)
    assert main(argv) == 0
    capsys.readouterr()
    assert _snapshot(DATA) == before
