"""What the appraisal rules of data/README.md move in the bundled results, one rule at a time.

Fits the default model (MCMC, 4 x (1000 + 1000), one seed) on a chain of states, from the
evidence base before the rules to the one after them, and writes ``bench/rules.md`` (per-domain
pooled means at every step, and which estimates each step lets in or out) and
``metaeval/records/rules.json`` (the raw numbers, for ``metaeval.appraisal.compare_fits``).

The states, cumulative, in the order the README gives the rules:

    before                 the base commit's code and data (extracted with git archive)
    + sparse cells         today's code, today's data with every later rule undone (below)
    + symmetric inclusion  figures without an SE enter through their direction, nulls too
    + dependence           one sample, one record; no part beside its whole; critical judgements
    + DRC denominators     55 participants and at least 83 controls, not 56 and 56
    + benefit as stated    curator-inferred benefits left out (model option)
    + risk of bias         per-estimate judgements widen the bias priors (model option) = after

A later rule is undone on a copy of ``data/`` (YAML edits listed in ``_undo``) or by a model
option, never by editing the code; so the first state after "before" differs from "before" only
by what the code does differently that no data or option switches off (the sparse-cell SE),
and the script checks that: every evidence row the two share must agree except the 0% cells.
Participation (TOT) analyses are fitted before and after.

    nice -n 19 .venv/bin/python bench/rules.py [--base COMMIT] [--seed N]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
#: The record the report reads (package data, through metaeval.bundled); rules.md is written beside this script.
RECORD = ROOT / "metaeval" / "records" / "rules.json"
BASE = "5390352"  # main before the appraisal rules

RUNNER = """
import json, math, sys
from metaeval.harmonise import load_evidence
from metaeval.model import prepare
from metaeval.sampling import SamplerSettings
from metaeval.spec import load_spec
from metaeval.summary import fit_and_summarise
data, model, estimand, out, seed = sys.argv[1:6]
evidence = load_evidence(data, estimand=estimand)
spec = load_spec(model)
layout = prepare(evidence, spec)
summary, _ = fit_and_summarise(evidence, spec, out=out, settings=SamplerSettings(seed=int(seed)), progress=False)
summary = summary.model_dump(mode="json") if hasattr(summary, "model_dump") else summary  # a typed Result since 03677eb
num = lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
rows = {r["estimate_id"]: [bool(r["poolable"]), bool(r.get("direction_only")), num(r["yi"]), num(r["sei"])]
        for r in evidence.to_dict("records")}
json.dump({"summary": summary, "entered": sorted(r["estimate_id"] for r in layout.estimates + layout.findings),
           "rows": rows}, sys.stdout)
"""

#: Model options that switch the two model-level rules off (a TOML merged with models/default.toml).
OPTIONS = {
    "both_off": '[risk_of_bias]\nhigh = "ignore"\n\n[data]\ninferred_benefit = "include"\n',
    "rob_off": '[risk_of_bias]\nhigh = "ignore"\n',
}


def _records(data: Path, project: str) -> tuple[dict, dict]:
    path = data / "projects" / f"{project}.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    return doc, {e["id"]: e for e in doc["estimates"]}


def _write(data: Path, project: str, doc: dict) -> None:
    (data / "projects" / f"{project}.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")


def _undo_denominators(data: Path) -> None:
    """DRC as before: n_treatment 56 on the table's records, n_control assumed 56."""
    doc, by_id = _records(data, "drc_sib")
    doc["assumptions"] = [a for a in doc["assumptions"] if a["field"] != "n_treatment"]
    for a in doc["assumptions"]:
        if a["field"] == "n_control":
            a["value"] = 56
    for e in by_id.values():
        if e.get("shared_sample") == "status_2m" and e.get("metric") == "pp":
            e["n_treatment"] = 56
    _write(data, "drc_sib", doc)


#: Records the dependence rule (and the critical judgement) leaves out, which were pooled or poolable before.
DEPENDENT = {"drc_sib": ["self_support_or_education", "status_education", "status_flexjob", "status_permanent_transfers",
                         "municipal_budget_surplus"],
             "cph_cfbu_outreach": ["job_or_education_12m"]}


def _undo_dependence(data: Path) -> None:
    for project in sorted(p.stem for p in (data / "projects").glob("*.yaml")):
        doc, by_id = _records(data, project)
        for e in by_id.values():
            e.pop("part_of", None)
            e.pop("shared_sample", None)
            if e["id"] in DEPENDENT.get(project, []):
                e.pop("poolable", None)
                e.pop("exclusion_reason", None)
                e.pop("risk_of_bias", None)
        _write(data, project, doc)


def _undo_symmetric_inclusion(data: Path, admitted: list[str]) -> None:
    """Leave out the figures only the symmetric-inclusion rule admits (as the code before it did)."""
    by_project: dict[str, list[str]] = {}
    for eid in admitted:
        project, _, est = eid.partition(":")
        by_project.setdefault(project, []).append(est)
    for project, ids in by_project.items():
        doc, by_id = _records(data, project)
        for est in ids:
            by_id[est].update(poolable=False, exclusion_reason="[bench] not admitted before the symmetric-inclusion rule")
        _write(data, project, doc)


def _run(code: Path, data: Path, model: str, estimand: str, out: Path, seed: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code)}
    done = subprocess.run(["nice", "-n", "19", sys.executable, "-c", RUNNER, str(data), model, estimand, str(out), str(seed)],
                          env=env, capture_output=True, text=True, check=False, cwd=code)
    if done.returncode != 0:
        raise SystemExit(f"fit failed ({code}, {data}, {model}, {estimand}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def _fmt(x, digits=3) -> str:
    return "–" if x is None else f"{x:.{digits}g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default=BASE, help="the commit before the rules")
    ap.add_argument("--seed", type=int, default=20261124)
    ap.add_argument("--markdown-only", action="store_true", help="rewrite rules.md from metaeval/records/rules.json, no fits")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.markdown_only:
        (ROOT / "bench" / "rules.md").write_text(_markdown(json.loads(RECORD.read_text())))
        return
    from metaeval.cells import present
    from metaeval.harmonise import load_evidence

    with tempfile.TemporaryDirectory(prefix="metaeval-rules-") as tmp:
        tmp = Path(tmp)
        base = tmp / "base"
        base.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.base], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        for name, text in OPTIONS.items():
            (tmp / f"{name}.toml").write_text(f'name = "{name}"\n' + text)
        opt = {k: str(tmp / f"{k}.toml") for k in OPTIONS}

        # data for each state, built backwards from today's data
        def copy(name: str, src: Path) -> Path:
            dst = tmp / name
            subprocess.run(["cp", "-r", str(src), str(dst)], check=True)
            return dst

        after = ROOT / "data"
        d_benefit = after  # the two model-level states use today's data
        d_denominators = copy("d_denominators", after)  # + dependence, with the DRC denominators undone
        _undo_denominators(d_denominators)
        d_dependence = copy("d_dependence", d_denominators)
        _undo_dependence(d_dependence)
        # what the old rule did not admit: a direction-only row with a figure, or without a reported significance
        admitted = [r["estimate_id"] for r in load_evidence(d_dependence).to_dict("records") if r["direction_only"] and (
            not present(r.get("significant")) or any(present(r.get(f)) for f in ("estimate", "mean_treatment", "se", "share_improved")))]
        d_symmetric = copy("d_symmetric", d_dependence)
        _undo_symmetric_inclusion(d_symmetric, admitted)

        states = [
            ("before", base, base / "data", "default"),
            ("+ sparse cells", ROOT, d_symmetric, opt["both_off"]),
            ("+ symmetric inclusion", ROOT, d_dependence, opt["both_off"]),
            ("+ dependence", ROOT, d_denominators, opt["both_off"]),
            ("+ DRC denominators", ROOT, after, opt["both_off"]),
            ("+ benefit as stated", ROOT, d_benefit, opt["rob_off"]),
            ("+ risk of bias (after)", ROOT, after, "default"),
        ]
        results = []
        for name, code, data, model in states:
            print(f"fitting: {name}", file=sys.stderr, flush=True)
            results.append((name, _run(code, data, model, "itt", tmp / "out", args.seed)))
        tot = [(name, _run(code, data, model, "tot", tmp / "out", args.seed))
               for name, code, data, model in (states[0], states[-1])]

    record = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "base": args.base,
        "head": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "seed": args.seed,
        # what the report checks before showing this record as an evidence base's (metaeval.appraisal.rules_moves)
        "evidence_sha256": results[-1][1]["summary"]["provenance"]["evidence_sha256"],
        "settings": "nutpie, 4 chains x (1000 tune + 1000 draws), models/default.toml",
        "itt": [{"state": n, "summary": _slim(r["summary"]), "entered": r["entered"]} for n, r in results],
        "tot": [{"state": n, "summary": _slim(r["summary"]), "entered": r["entered"]} for n, r in tot],
        "admitted_by_symmetric_inclusion": admitted,
        "check_before_vs_sparse_cells": _check(results[0][1]["rows"], results[1][1]["rows"]),
    }
    RECORD.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    (ROOT / "bench" / "rules.md").write_text(_markdown(record))
    print(_markdown(record))


def _slim(summary: dict) -> dict:
    """What the comparison needs of a fit summary: per domain its pooled mean, tau, new-project effect and counts."""
    keep = ("label", "metric", "beneficial", "mu", "tau", "theta_new", "n_projects", "n_estimates", "n_findings", "designs")
    return {"domains": {d: {k: v[k] for k in keep if k in v} for d, v in summary["domains"].items()},
            "diagnostics": summary["diagnostics"]}


def _check(before: dict, first: dict) -> dict:
    """Rows whose poolability or yi/sei differ between "before" and "+ sparse cells" (only 0% cells should)."""
    differ = {}
    for eid in sorted(set(before) | set(first)):
        a, b = before.get(eid), first.get(eid)
        if a is None or b is None:
            differ[eid] = {"before": a, "sparse cells": b}
            continue
        same = a[:2] == b[:2] and all((x is None and y is None) or (x is not None and y is not None and math.isclose(x, y, rel_tol=1e-9))
                                      for x, y in zip(a[2:], b[2:]))
        if not same:
            differ[eid] = {"before": a, "sparse cells": b}
    return differ


def _markdown(record: dict) -> str:
    from metaeval.appraisal import compare_fits

    states = [s["state"] for s in record["itt"]]
    rows = compare_fits([(s["state"], s["summary"]) for s in record["itt"]])
    out = [
        "# What the appraisal rules move",
        "",
        f"Written by `bench/rules.py` on {record['date']} (head {record['head']}, base {record['base']}); "
        f"{record['settings']}, seed {record['seed']}. Each column adds one rule of `data/README.md` to the one before; "
        "cells are the pooled mean (mu) of the domain in its metric, with its 95% HDI and the posterior probability "
        "that the effect is beneficial, and the number of estimates and direction-only findings in the domain. "
        "The first column is the base commit's code and data; every later column is today's code, with the later "
        "rules undone on a copy of the data or by a model option. Each state is its own MCMC fit: a move smaller than "
        "the Monte Carlo error of a mean (about 3% of its posterior SD at these ESS, e.g. 0.1 pp in activation) is "
        "noise, as where a domain moves in a step that changes none of its estimates.",
        "",
        "| domain | " + " | ".join(states) + " |",
        "|---|" + "---|" * len(states),
    ]
    for r in rows:
        cells = []
        for _, res in r.results:
            cells.append("–" if res is None else
                         f"{_fmt(res.mean)} [{_fmt(res.hdi_low)}, {_fmt(res.hdi_high)}] P+ {_fmt(res.p_beneficial, 2)} (n {res.n_estimates})")
        out.append(f"| {r.domain} ({r.metric}) | " + " | ".join(cells) + " |")
    out += ["", "Diagnostics gate per state: " + "; ".join(
        f"{s['state']}: {'passed' if s['summary']['diagnostics']['passed'] else 'FAILED'} "
        f"(R-hat max {s['summary']['diagnostics']['rhat_max']}, ESS min {s['summary']['diagnostics']['ess_bulk_min']:.0f}, "
        f"divergences {s['summary']['diagnostics']['divergences']})" for s in record["itt"]), ""]
    out += ["## What each step lets in (+) and out (−)", ""]
    for prev, cur in zip(record["itt"], record["itt"][1:]):
        came = sorted(set(cur["entered"]) - set(prev["entered"]))
        went = sorted(set(prev["entered"]) - set(cur["entered"]))
        out.append(f"- **{cur['state']}**: " + ("; ".join([*(f"+ {e}" for e in came), *(f"− {e}" for e in went)]) or "the same estimates (priors or SEs change)"))
    check = record["check_before_vs_sparse_cells"]
    out += ["", "## Check: before vs + sparse cells", "",
            "Evidence rows whose poolability, yi or sei differ between the base commit and today's code with every later "
            "rule undone (expected: only the rows with a 0% cell, whose SE is now Agresti-Caffo's):", ""]
    out += [f"- {eid}: before {v['before']}, now {v['sparse cells']} (poolable, direction-only, yi, sei)" for eid, v in check.items()] or ["- none"]
    tot = compare_fits([(s["state"], s["summary"]) for s in record["tot"]])
    out += ["", "## Participation effects (estimand = tot), before and after all rules", "",
            "| domain | " + " | ".join(s["state"] for s in record["tot"]) + " |", "|---|" + "---|" * len(record["tot"])]
    for r in tot:
        out.append(f"| {r.domain} ({r.metric}) | " + " | ".join(
            "–" if res is None else f"{_fmt(res.mean)} [{_fmt(res.hdi_low)}, {_fmt(res.hdi_high)}] (n {res.n_estimates})" for _, res in r.results) + " |")
    for s in record["tot"]:
        oto = [e for e in s["entered"] if e.startswith("oto:")]
        out.append(f"\n{s['state']}: OtO rows in the TOT analysis: {len(oto)}, of them participation effects: "
                   f"{sum(e.endswith('_tot') for e in oto)} ({', '.join(e.removeprefix('oto:') for e in oto if not e.endswith('_tot')) or 'no ITT stands in'})")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
