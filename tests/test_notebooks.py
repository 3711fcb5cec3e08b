"""The example notebooks run top to bottom and produce what they promise.

Each notebook is executed with nbclient in a kernel running this interpreter (a
kernelspec written to a temporary folder, so no user or system kernel named
``python3`` can stand in), with a temporary working directory and
``$METAEVAL_NOTEBOOK_OUT`` pointing at another temporary folder. A per-test time
budget is enforced cell by cell (a cell may use what is left of it). After the
last cell a probe cell, added in memory only, prints the notebook's state as
JSON; the tests assert on it and on the visible outputs of tagged cells.

The notebooks are committed without outputs; the fast tests below check that,
and that they use only the top-level ``metaeval.<name>`` API.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

pytestmark = pytest.mark.notebook

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
QUICKSTART = NOTEBOOKS / "01_analyst_quickstart.ipynb"
RESEARCHER = NOTEBOOKS / "02_researcher_models.ipynb"
DECISIONS = NOTEBOOKS / "03_analyst_decisions.ipynb"
KERNEL_NAME = "metaeval-test-venv"
PROBE_MARK = "METAEVAL-PROBE:"
#: Whole-notebook budgets in seconds. Measured on 2 cores with a warm compile
#: cache: quick start about 20 s, researcher about 70 s, decisions (two fits) about 100 s.
BUDGET = {QUICKSTART.name: 300, RESEARCHER.name: 600, DECISIONS.name: 600}


# --- helpers ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kernel_dir(tmp_path_factory) -> Path:
    """A kernelspec that runs ipykernel with this very interpreter (the project's venv)."""
    base = tmp_path_factory.mktemp("kernels")
    spec_dir = base / KERNEL_NAME
    spec_dir.mkdir()
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "metaeval test kernel",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return base


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def _text(cell) -> str:
    """Everything a cell showed, as text (streams, plain and HTML results, errors)."""
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif out["output_type"] in ("execute_result", "display_data"):
            parts.append(out["data"].get("text/plain", ""))
            parts.append(out["data"].get("text/html", ""))
        elif out["output_type"] == "error":
            parts.append("\n".join(out["traceback"]))
    return "\n".join(parts)


def _tagged(nb, tag: str):
    cells = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}, found {len(cells)}"
    return cells[0]


def _execute(path: Path, *, probe: str, kernel_dir: Path, workdir: Path, budget: float):
    """Run every cell of ``path`` and then ``probe``; return the notebook and the probe's JSON."""
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(probe))  # in memory only
    km = AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir)]))
    client = NotebookClient(nb, km=km, timeout=int(budget), allow_errors=False, resources={"metadata": {"path": str(workdir)}})
    deadline = time.monotonic() + budget
    client.reset_execution_trackers()
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"{path.name}: over the {budget:.0f} s budget before cell {index}")
            client.timeout = max(1, int(remaining))
            client.execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
    lines = [line for line in _text(nb.cells[-1]).splitlines() if line.startswith(PROBE_MARK)]
    assert len(lines) == 1, f"the probe printed no state:\n{_text(nb.cells[-1])}"
    return nb, json.loads(lines[0][len(PROBE_MARK):])


@pytest.fixture
def run_notebook(kernel_dir, tmp_path, monkeypatch):
    """Execute a notebook in a temporary working directory; outputs go to a temporary folder."""
    workdir = tmp_path / "cwd"
    out = tmp_path / "out"
    workdir.mkdir()
    out.mkdir()
    monkeypatch.setenv("METAEVAL_NOTEBOOK_OUT", str(out))  # the kernel inherits the environment
    monkeypatch.setenv("MPLBACKEND", "agg")

    def run(path: Path, probe: str):
        data_before = _snapshot(ROOT / "data")
        nb, state = _execute(path, probe=probe, kernel_dir=kernel_dir, workdir=workdir, budget=BUDGET[path.name])
        assert _snapshot(ROOT / "data") == data_before, "a notebook wrote under data/"
        assert not any(workdir.iterdir()), f"a notebook wrote into its working directory: {sorted(p.name for p in workdir.iterdir())}"
        return nb, state, out

    return run


# --- fast checks on the committed files --------------------------------------------------


@pytest.mark.parametrize("path", [QUICKSTART, RESEARCHER, DECISIONS], ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "no code cells"
    assert all(c.outputs == [] and c.execution_count is None for c in code), "strip the outputs before committing"


@pytest.mark.parametrize("path", [QUICKSTART, RESEARCHER, DECISIONS], ids=lambda p: p.stem)
def test_uses_only_the_top_level_api(path):
    nb = nbformat.read(path, as_version=4)
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "import metaeval" in source
    assert not re.search(r"^\s*(from\s+metaeval[.\w]*\s+import|import\s+metaeval\.)", source, re.M), "use metaeval.<name>, not submodules"


def test_top_level_names_stay_the_same_objects():
    """The notebooks call ``metaeval.fit`` and ``metaeval.summarise`` many times: a name must not turn
    into a submodule of the same name once that submodule has been imported."""
    import subprocess

    code = (
        "import metaeval\n"
        "first = {n: getattr(metaeval, n) for n in metaeval.__all__}\n"
        "second = {n: getattr(metaeval, n) for n in metaeval.__all__}\n"
        "print(sorted(n for n in first if first[n] is not second[n] or type(second[n]).__name__ == 'module'))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"names that change on second use: {result.stdout.strip()}"


# --- the notebooks, executed ----------------------------------------------------------------


QUICKSTART_PROBE = f"""
import json
print({PROBE_MARK!r} + json.dumps({{
    "summary_keys": sorted(summary.model_dump()),
    "domains": {{k: {{"mu": v.mu.model_dump(), "theta_new": v.theta_new.model_dump(), "projects": [p.project for p in v.projects],
                     "label": v.label, "certainty": v.certainty.level}} for k, v in summary.domains.items()}},
    "diagnostics": summary.diagnostics.model_dump(),
    "domain_table_index": list(domain_table.index),
    "domain_table_columns": list(domain_table.columns),
    "report": str(report_path),
    "out": str(OUT),
    "figure_axes": len(fig.axes),
}}))
"""


@pytest.mark.slow
def test_analyst_quickstart(run_notebook):
    import metaeval

    evidence = metaeval.load_evidence()
    nb, state, out = run_notebook(QUICKSTART, QUICKSTART_PROBE)

    # the evidence: counts and projects as in the evidence table
    counts = _text(_tagged(nb, "evidence-counts"))
    n_pooled = int(evidence.poolable.sum())
    assert f"{len(evidence)} figures from {evidence.project_id.nunique()} projects: {n_pooled} can be pooled" in counts
    projects = _text(_tagged(nb, "projects"))
    assert all(p in projects for p in evidence.project_id.unique())
    assert "rct" in _text(_tagged(nb, "pooled-by-domain"))
    assert "no comparison group" in _text(_tagged(nb, "left-out-reasons"))

    # the fit and its typed result, judged
    assert "Sampler checks passed." in _text(_tagged(nb, "fit")), _text(_tagged(nb, "fit"))
    assert {"domains", "diagnostics", "model", "seed"} <= set(state["summary_keys"])
    assert state["diagnostics"]["passed"] is True
    poolable_domains = set(evidence.loc[evidence.poolable, "domain"])
    assert set(state["domains"]) == poolable_domains
    for domain, block in state["domains"].items():
        assert all(block["mu"][k] is not None for k in ("mean", "sd", "hdi_low", "hdi_high", "p_beneficial")), domain
        assert all(block["theta_new"][k] is not None for k in ("mean", "hdi_low", "hdi_high")), domain
        assert block["projects"] and block["certainty"] in ("high", "moderate", "low", "very low"), domain

    # the per-domain table shows every domain, in its units, with P(beneficial) and the predictive range
    assert state["domain_table_index"] == sorted(poolable_domains)
    assert {"average effect", "95% interval", "P(beneficial)", "certainty", "new project, 95% range", "projects", "designs"} <= set(state["domain_table_columns"])
    table = _text(_tagged(nb, "domain-table"))
    for domain, block in state["domains"].items():
        assert domain in table and block["label"] in table
    assert "percentage points" in table and "SD units" in table
    words = _text(_tagged(nb, "in-words"))
    assert "Employment (higher is better)" in words and "Self-support" in words and "%" in words
    notes = _text(_tagged(nb, "notes"))
    assert all(block["label"] + ":" in notes for block in state["domains"].values())

    # a forest plot, drawn inline
    forest = _tagged(nb, "forest-plot")
    assert any("image/png" in o.get("data", {}) for o in forest.outputs)
    assert state["figure_axes"] >= 1
    assert "pooling" in _text(_tagged(nb, "shrinkage"))

    # the report: in the output folder, a complete HTML page naming the domains
    report = Path(state["report"])
    assert Path(state["out"]) == out and report.parent == out and report.is_file()
    html = report.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert all(block["label"] in html for block in state["domains"].values())
    assert str(report) in _text(_tagged(nb, "report"))


RESEARCHER_PROBE = f"""
import json

def _mu(s, d):
    return s.domains[d].mu.mean

_gap_default = (post_default["posterior"]["mu"].sel(domain="self_support") / scale["self_support"]
                - post_default["posterior"]["mu"].sel(domain="employment") / scale["employment"]).mean().item()
print({PROBE_MARK!r} + json.dumps({{
    "mu_self_support": {{"default": _mu(summary_default, "self_support"), "tau": _mu(summary_tau, "self_support"),
                         "bias": _mu(summary_bias, "self_support"), "linked": _mu(summary_linked, "self_support")}},
    "tau_prior": summary_tau.domains["self_support"].priors["tau"],
    "default_tau_prior": summary_default.domains["self_support"].priors["tau"],
    "tau_sd": {{"default": summary_default.domains["self_support"].theta_new.sd,
               "tau": summary_tau.domains["self_support"].theta_new.sd}},
    "bias_terms": [t.model_dump() for t in summary_bias.model.bias_terms if t.design == "before_after"],
    "model_name": spec_bias.name,
    "model_file": str(model_file),
    "out": str(OUT),
    "linked_vars": sorted(post_linked["posterior"].data_vars),
    "gap": {{"default": _gap_default, "linked": post_linked["posterior"]["gap_self_support_employment"].mean().item()}},
    "gates": {{"default": summary_default.diagnostics.passed, "linked": summary_linked.diagnostics.passed}},
    "log_likelihood": {{k: dict(p["log_likelihood"].sizes) for k, (_, p) in variants.items()}},
    "compare_index": list(comparison.index),
    "compare_columns": list(comparison.columns),
    "pareto_k": {{k: [float(x) for x in v.pareto_k.values] for k, v in loos.items()}},
}}))
"""


@pytest.mark.slow
def test_researcher_models(run_notebook):
    nb, state, out = run_notebook(RESEARCHER, RESEARCHER_PROBE)

    # configuration as data: the override and the model file reach the fit
    assert state["default_tau_prior"] == "halfnormal(4)" and state["tau_prior"] == "halfnormal(10)"
    assert state["model_name"] == "pessimistic_before_after"
    model_file = Path(state["model_file"])
    assert model_file.parent == out and model_file.is_file() and Path(state["out"]) == out
    # 0.5 and 0.4 x the domain scale of 10 pp; Assens' high attrition adds 0.25 x 10 to the SD in quadrature (data/README.md)
    assert [t["prior"] for t in state["bias_terms"] if t["label"] == "self_support/assens_job_familie"] == ["normal(5, 4.71699)"]
    mu = state["mu_self_support"]
    # more bias assumed for the before-after estimate: a lower pooled self-support mean
    assert mu["bias"] < mu["default"]
    # a wider tau prior: a less certain effect for a new project
    assert state["tau_sd"]["tau"] > state["tau_sd"]["default"]
    sensitivity = _text(_tagged(nb, "sensitivity"))
    assert "tau.self_support=halfnormal(10)" in sensitivity and "before_after bias" in sensitivity and "default" in sensitivity

    # the extended model: the Potential links the domains and is sampled with the rest
    assert "gap_self_support_employment" in state["linked_vars"]
    assert abs(state["gap"]["linked"]) < abs(state["gap"]["default"])
    assert (mu["linked"] - mu["default"]) * state["gap"]["default"] < 0  # self-support moves towards employment
    assert state["gates"] == {"default": True, "linked": True}
    assert "linked domains" in _text(_tagged(nb, "extension"))

    # PSIS-LOO over the variants, each scored on the same 17 numeric estimates
    variants = {"default", "no_bias", "variance_inflation", "linked domains"}
    assert set(state["log_likelihood"]) == variants
    n_estimates = {sizes["estimate"] for sizes in state["log_likelihood"].values()}
    assert len(n_estimates) == 1
    (n_estimates,) = n_estimates
    assert set(state["compare_index"]) == variants
    assert {"rank", "elpd_diff", "dse", "weight"} <= set(state["compare_columns"])
    compare = _text(_tagged(nb, "loo-compare"))
    assert all(name in compare for name in variants)
    assert set(state["pareto_k"]) == variants and all(len(k) == n_estimates for k in state["pareto_k"].values())
    assert "Pareto k > 0.7" in _text(_tagged(nb, "pareto-k"))
    assert "largest difference" in _text(_tagged(nb, "loo-reading"))


DECISIONS_PROBE = f"""
import json
print({PROBE_MARK!r} + json.dumps({{
    "gate": summary.diagnostics.passed,
    "matrix_shape": list(matrix.shape),
    "matrix_index": list(matrix.index),
    "compare": {{d: {{"pairwise": dc.pairwise, "p_best": [r.p_best for r in dc.ranks], "reference": dc.reference}}
                for d, dc in comparison.domains.items()}},
    "ratios": [[r.cost, r.domain, r.basis, r.p_below_wtp] for r in effectiveness.results],
    "no_ratio": sorted(effectiveness.no_ratio),
    "plan": {{d: [[p.n, p.expected_width, p.p_change] for p in dp.points] for d, dp in plan.domains.items()}},
    "most_changed": plan.most_changed()[0],
    "report": str(report_path),
}}))
"""


@pytest.mark.slow
def test_analyst_decisions(run_notebook):
    import metaeval

    evidence = metaeval.load_evidence()
    nb, state, out = run_notebook(DECISIONS, DECISIONS_PROBE)
    assert state["gate"] is True
    assert list((out / "fits").glob("*/posterior.nc")) and len(list((out / "fits").glob("*/posterior.nc"))) == 2

    # 1. the initiatives x outcomes matrix, and the comparison checked against the face-value fit
    assert state["matrix_shape"] == [evidence.project_id.nunique(), len(set(evidence.loc[evidence.poolable, "domain"]))]
    assert any("[rct]" in row for row in state["matrix_index"])
    assert "%" in _text(_tagged(nb, "matrix")) and "reason" in _text(_tagged(nb, "unused"))
    for block in state["compare"].values():
        assert block["reference"] == "no_bias"
        assert sum(block["p_best"]) == pytest.approx(1, abs=1e-5)
        for a, row in block["pairwise"].items():
            for b, p in row.items():
                assert p + block["pairwise"][b][a] == pytest.approx(1, abs=1e-5)
    sentences = _text(_tagged(nb, "sentences"))
    assert "Employment:" in sentences and "without the design-bias adjustment" in sentences
    assert "P(best)" in _text(_tagged(nb, "ranking"))

    # 2. costs as printed; the cost per person helped only for OtO, every other figure saying why not
    assert "2022" in _text(_tagged(nb, "costs")) and "not stated" in _text(_tagged(nb, "costs"))
    assert {(c, d, b) for c, d, b, _ in state["ratios"]} == {("oto_total_itt", d, b) for d in ("disability_pension", "flexjob")
                                                          for b in ("model", "trial")}
    assert all(0 <= p <= 1 for *_, p in state["ratios"])
    assert {"drc_budget_surplus", "assens_success_after", "oto_social_itt"} <= set(state["no_ratio"])
    assert any("image/png" in o.get("data", {}) for o in _tagged(nb, "ceac").outputs)

    # 3. the plan: the expected width falls with n in every domain; the headline names a domain
    for d, points in state["plan"].items():
        widths = [w for _, w, _ in points]
        assert [n for n, _, _ in points] == [50, 100, 200, 400] and widths == sorted(widths, reverse=True), d
    assert any("image/png" in o.get("data", {}) for o in _tagged(nb, "plan-figure").outputs)
    headline = _text(_tagged(nb, "plan-headline"))
    assert "would most likely change the verdict in" in headline and state["most_changed"] in state["plan"]

    # the report, with the initiative sections
    report = Path(state["report"])
    assert report.parent == out
    html = report.read_text(encoding="utf-8")
    assert html.index('id="at-a-glance"') < html.index('id="domains"') and 'class="card"' in html

