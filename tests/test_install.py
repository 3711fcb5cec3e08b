"""metaeval as an installed package: a wheel built from this tree, in a fresh environment, runs from any folder.

Exactly what a researcher adding metaeval to their own project does: ``pip wheel . -w dist --no-deps``, a new
virtual environment with the lock's dependencies (``pip install -r requirements.lock``, from the package
registry), the wheel with ``--no-deps``, then ``metaeval run`` in an unrelated empty folder. It passes only if
the bundled evidence, the model files and the records the report cites travel inside the wheel and are found there
(importlib.resources), not in this checkout. About 3 minutes of wall time, most of it the install (measured:
100 s wall, 47 CPU-seconds) and the first compile of the model in an empty compile cache.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.subprocess, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent


def _run(cmd: list, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_a_wheel_installed_in_a_fresh_environment_runs_from_any_folder(tmp_path):
    # the build reads only what a wheel is made of; a copy keeps setuptools' build/ out of the checkout
    source = tmp_path / "source"
    shutil.copytree(REPO / "metaeval", source / "metaeval", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "METAEVAL_DATA")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", METAEVAL_CACHE_DIR=str(tmp_path / "cache"))

    _run([sys.executable, "-m", "pip", "wheel", ".", "-w", "dist", "--no-deps", "-q"], source, env)
    (wheel,) = (source / "dist").glob("metaeval-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], tmp_path, env)
    python = venv / "bin" / "python"
    _run([python, "-m", "pip", "install", "-q", "-r", REPO / "requirements.lock"], tmp_path, env)
    _run([python, "-m", "pip", "install", "-q", "--no-deps", wheel], tmp_path, env)

    work = tmp_path / "elsewhere"
    work.mkdir()
    where = _run([python, "-c", "import metaeval; print(metaeval.__file__)"], work, env).stdout.strip()
    assert Path(where).is_relative_to(venv), f"metaeval imported from {where}, not from the installed wheel"
    _run([venv / "bin" / "metaeval", "run", "--out", work / "x"], work, env)

    assert sorted(p.name for p in work.iterdir()) == ["x"]  # nothing written beside the output folder
    report = (work / "x" / "report.html").read_text(encoding="utf-8")
    provenance = json.loads((work / "x" / "summary.json").read_text(encoding="utf-8"))["provenance"]
    # the installed package read the same evidence and model file as this checkout holds
    from metaeval.harmonise import evidence_digest, load_evidence
    from metaeval.spec import load_spec

    assert provenance["evidence_sha256"] == evidence_digest(load_evidence(REPO / "data"))
    assert provenance["model_sha256"] == load_spec(REPO / "models" / "default.toml").digest()
    # the records the report cites came from the wheel too: the calibration study with its picture, and the
    # appraisal rules' record (shown only when it was made on the evidence the run read)
    assert "Calibration of the model" in report and "Rank histograms and ECDF differences" in report
    assert "the pooled average effect before the appraisal rules" in report

    # the exact grid's worker processes import the installed package too, whatever folder they start in (one that
    # holds a metaeval/ of its own, say: a Python started with -m would put it first on its path)
    decoy = tmp_path / "decoy"
    (decoy / "metaeval").mkdir(parents=True)
    (decoy / "metaeval" / "__init__.py").write_text("raise ImportError('the metaeval/ of the working folder')\n")
    _run([venv / "bin" / "metaeval", "sensitivity", "--engine", "exact", "--out", tmp_path / "grid", "--tau", "halfnormal(0.2)", "--bias",
          "--inclusion", "--estimand", "--direction-only", "--no-loo", "--no-power-scaling", "--no-report", "--workers", "2"], decoy, env)
    assert (tmp_path / "grid" / "sensitivity" / "sensitivity.json").is_file()
