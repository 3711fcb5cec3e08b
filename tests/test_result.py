"""The result contract: both engines return one typed Result, its JSON round-trips exactly and is valid
against the JSON Schema shipped in the package, and the two engines' documents have the same shape."""

from __future__ import annotations

import contextlib
import io
import json
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from metaeval.cli import main
from metaeval.result import SCHEMA_VERSION, Result, json_schema

EIGHT = Path(__file__).parent / "fixtures" / "eight_schools.csv"
SHIPPED = resources.files("metaeval") / "schemas" / "result.schema.json"


def _cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(args))
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def documents(tmp_path_factory):
    """`fit --format json` from both engines on one CSV, and `summary`/`run` of the MCMC fit."""
    out = tmp_path_factory.mktemp("result")
    fast = ["--chains", "2", "--draws", "200", "--tune", "200", "--allow-failed-gate"]
    docs = {}
    for name, args in (("mcmc", ["fit", *fast]), ("exact", ["fit", "--engine", "exact"]), ("summary", ["summary", *fast]),
                       ("run", ["run", *fast])):
        rc, stdout, stderr = _cli(*args, "--csv", str(EIGHT), "--out", str(out / ("exact" if name == "exact" else "mcmc")),
                                  "--format", "json")
        assert rc == 0, stderr
        docs[name] = json.loads(stdout)
    return docs


def test_the_shipped_schema_is_the_result_models_schema():
    """Regenerate with:
    python -c "import json; from metaeval.result import json_schema; print(json.dumps(json_schema(), indent=2, sort_keys=True))" \
        > metaeval/schemas/result.schema.json"""
    assert json.loads(SHIPPED.read_text(encoding="utf-8")) == json_schema()
    jsonschema.Draft202012Validator.check_schema(json_schema())


@pytest.mark.mcmc
@pytest.mark.parametrize("name", ["mcmc", "exact", "summary", "run"])
def test_every_door_prints_json_valid_against_the_shipped_schema(documents, name):
    schema = json.loads(SHIPPED.read_text(encoding="utf-8"))
    jsonschema.validate(documents[name], schema)
    assert documents[name]["schema_version"] == SCHEMA_VERSION


#: Mappings whose keys are data (ids, designs, parameters, package names), not fields of the contract.
_DATA_KEYED = (".domains", ".pairwise", ".designs", ".priors", ".weights", ".hierarchy", ".overrides", ".assumed", ".versions",
               ".thresholds")


def _shape(value, path=""):
    """Every key path of a JSON document, with the keys of data-keyed mappings generalised to '*' (and a
    data-keyed mapping of plain values, empty or not, counted by its own path only)."""
    if isinstance(value, dict):
        if path.endswith(_DATA_KEYED) and not any(isinstance(v, dict | list) for v in value.values()):
            return set()
        keys = set()
        for k, v in value.items():
            segment = "*" if path.endswith(_DATA_KEYED) else k
            keys.add(f"{path}.{segment}")
            keys |= _shape(v, f"{path}.{segment}")
        return keys
    if isinstance(value, list):
        return set().union(*(_shape(v, f"{path}[]") for v in value)) if value else set()
    return set()


@pytest.mark.mcmc
def test_both_engines_print_documents_of_the_same_structure(documents):
    mcmc, exact = documents["mcmc"], documents["exact"]
    assert exact["diagnostics"] is None and mcmc["diagnostics"]["passed"] in (True, False)
    # every key the exact engine fills, the MCMC engine has at the same place (but for what only integration
    # has: its numerical error), and the other way round (but for what only sampling has: the diagnostics
    # block, the sampler record, the pairwise table, and the bias model's terms and risk-of-bias rule)
    only_mcmc = {k for k in _shape(mcmc) - _shape(exact) if not k.startswith((".diagnostics.", ".model.sampler.", ".model.bias_terms",
                                                                             ".model.risk_of_bias."))
                 and ".pairwise." not in k}
    only_exact = {k for k in _shape(exact) - _shape(mcmc) if not k.startswith(".numerical.")}
    assert only_exact == set() and only_mcmc == set()
    assert set(mcmc) == set(exact)
    assert set(mcmc["domains"]["all"]) == set(exact["domains"]["all"])


@pytest.mark.mcmc
@pytest.mark.parametrize("name", ["mcmc", "exact"])
def test_a_result_round_trips_through_its_json(documents, name):
    result = Result.model_validate(documents[name])
    assert Result.from_json(result.to_json()) == result
    assert json.loads(result.to_json()) == documents[name]


@pytest.mark.mcmc
def test_the_tidy_table_has_one_row_per_domain_and_quantity(documents):
    result = Result.model_validate(documents["mcmc"])
    frame = result.to_frame()
    assert list(frame["quantity"]).count("mu") == 1 and list(frame["quantity"]).count("project") == 8
    mu = frame[frame["quantity"] == "mu"].iloc[0]
    assert mu["mean"] == result.domains["all"].mu.mean and mu["p_beneficial"] == result.domains["all"].mu.p_beneficial


@pytest.mark.mcmc
def test_a_document_that_is_not_a_result_is_refused_field_by_field(documents, tmp_path):
    broken = json.loads(json.dumps(documents["exact"]))
    broken["domains"]["all"]["mu"] = 3.5  # a number where a table was
    broken["domains"]["all"]["tau"]["mean"] = "wide"
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(broken), encoding="utf-8")
    rc, _, err = _cli("report", "--csv", str(EIGHT), "--summary", str(path), "--output", str(tmp_path / "r.html"))
    assert rc == 2 and "Traceback" not in err
    assert "domains.all.mu" in err and "domains.all.tau.mean" in err and not (tmp_path / "r.html").exists()
    future = {**documents["exact"], "schema_version": SCHEMA_VERSION + 1}
    path.write_text(json.dumps(future), encoding="utf-8")
    rc, _, err = _cli("plot", "forest", "--csv", str(EIGHT), "--summary", str(path), "--domain", "all", "--out", str(tmp_path / "f.png"))
    assert rc == 2 and "schema_version" in err
