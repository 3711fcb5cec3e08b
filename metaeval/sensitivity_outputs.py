"""The outputs of a sensitivity run (:mod:`metaeval.sensitivity`): the specification curves, the report's
section, the files of a run, and that section again from a saved run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from metaeval.sensitivity import BASELINE, FACTORS, Grid, SensitivityResult

log = logging.getLogger(__name__)


def spec_curve(table, domain: str, *, decision_probability: float = 0.9):
    """The specification curve of one domain: mu (mean and HDI, in the domain's metric) per scenario, sorted, over
    the choices made."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    rows = table[(table["domain"] == domain) & table["error"].isna()].sort_values("mu_mean", ignore_index=True)
    metric = next((str(m) for m in rows["metric"] if isinstance(m, str) and m), "")
    labels = [f"{f}: {v or 'model'}" for f in FACTORS for v in sorted({str(x) for x in rows[f]})]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 2.6 + 0.22 * len(labels)), sharex=True,
                                      gridspec_kw={"height_ratios": [2.2, 0.25 * max(len(labels), 2)]})
    x = np.arange(len(rows))
    colours = ["#1b7837" if p >= decision_probability else ("#b2182b" if p <= 1 - decision_probability else "#555555") for p in rows["p_beneficial"]]
    top.vlines(x, rows["mu_hdi_low"], rows["mu_hdi_high"], colors=colours, lw=1.6)
    top.scatter(x, rows["mu_mean"], c=colours, zorder=3, s=[60 if s == BASELINE else 22 for s in rows["scenario"]],
                marker="o", edgecolors=["black" if s == BASELINE else "none" for s in rows["scenario"]])
    top.axhline(0, color="black", lw=0.8, ls=":")
    prob = rows["hdi_prob"].iloc[0] if len(rows) else 0.95
    top.set_ylabel(f"pooled effect μ{f' ({metric})' if metric else ''}\n(mean, {prob:.0%} HDI)")
    top.set_title(f"{domain}: specification curve (large ringed dot = baseline)", fontsize=10)
    marks = []  # (scenario, label row): one scatter for all, not one a label (a tenth of the figure's time)
    for i, label in enumerate(labels):
        f, _, v = label.partition(": ")
        marks += [(j, i) for j, val in enumerate(rows[f]) if (str(val) or "model") == v or (v == "model" and str(val) == "")]
    bottom.scatter([j for j, _ in marks], [i for _, i in marks], s=14, color="black")
    bottom.set_yticks(range(len(labels)), labels, fontsize=7)
    bottom.set_ylim(-0.5, len(labels) - 0.5)
    bottom.invert_yaxis()
    bottom.set_xticks(x, [""] * len(x))
    bottom.set_xlabel(f"scenarios, sorted by pooled mean (green: P(beneficial) ≥ {decision_probability:.2f}, red: ≤ {1 - decision_probability:.2f})", fontsize=8)
    fig.tight_layout()
    return fig


def spec_curves(result: SensitivityResult) -> dict[str, bytes]:
    """Each domain's specification curve as PNG bytes (110 dpi): the run's files and its report's figures, drawn once."""
    import matplotlib.pyplot as plt

    from metaeval.plots import figure_bytes

    table, curves = result.table(), {}
    for d in sorted(table["domain"].dropna().unique()):
        fig = spec_curve(table, d, decision_probability=result.grid.decision_probability)
        curves[d] = figure_bytes(fig, "png", dpi=110)
        plt.close(fig)
    return curves


def report_extras(result: SensitivityResult, *, figures: bool = True, curves: dict[str, bytes] | None = None) -> dict:
    """The report's ``extras["sensitivity"]`` section: verdicts, table, spec curves (``curves``: from
    :func:`spec_curves`, else drawn here), LOO and power-scaling."""
    table = result.table()
    verdict = result.verdicts()
    text = [
        f"{len(result.scenarios)} scenario(s) from {Path(result.grid.source).name or 'the grid'} "
        f"({'one choice changed at a time from the baseline' if result.grid.mode == 'oat' else 'every combination of choices'}); "
        "all with the same seed. A verdict is robust when the pooled effect keeps its direction and P(beneficial) "
        f"stays in the same class (≥ {result.grid.decision_probability:.2f}, ≤ {1 - result.grid.decision_probability:.2f}, or between) in every scenario.",
        *[f"{d}: {v}" for d, v in verdict.items()],
    ]
    failed = [s["name"] + ": " + r["error"] for s, r in zip(result.scenarios, result.results) if not r["ok"]]
    if failed:
        text.append("Failed scenarios (left out above): " + "; ".join(failed))
    loo = result.loo_table()
    flagged = loo[loo["flag"].notna() & ~loo["flag"].fillna("").str.startswith("only project")]
    if len(loo):
        text.append("Leave one project out: " + ("; ".join(f"{r.domain}: without {r.project}, {r.flag}" for r in flagged.itertuples())
                                                 if len(flagged) else "no single project flips a domain's sign or moves its pooled mean by more than one posterior SD") + ".")
    ps = result.power_scaling_table()
    if len(ps):
        flagged_ps = ps[ps["diagnosis"].notna() & (ps["diagnosis"] != "ok")]
        text.append("Prior and likelihood sensitivity (power-scaling, Kallioinen et al. 2024): "
                    + ("; ".join(f"{r.domain}: {r.meaning}" for r in flagged_ps.itertuples()) if len(flagged_ps)
                       else "no domain is flagged") + ".")
    shown = table.drop(columns=["hdi_prob"]).copy()
    figs = []
    if figures:
        curves = spec_curves(result) if curves is None else curves
        figs = [{"caption": f"Specification curve: {d}", "figure": png} for d, png in curves.items()]
    section = {"title": "Sensitivity to priors, bias model, inclusion and estimand", "text": text, "table": shown, "figures": figs}
    return section


def write_outputs(result: SensitivityResult, directory: str | Path, curves: dict[str, bytes] | None = None) -> dict[str, Path]:
    """Write the table (CSV), everything (JSON), LOO and power-scaling (CSV) and one PNG per domain (``curves``: from
    :func:`spec_curves`, else drawn here), atomically."""
    from metaeval.files import safe_csv, safe_name, write_atomic

    directory = Path(directory)
    paths = {}
    table = result.table()
    paths["table"] = write_atomic(directory / "sensitivity.csv", safe_csv(table))
    paths["json"] = write_atomic(directory / "sensitivity.json", json.dumps(result.to_dict(), indent=2, sort_keys=True, default=str) + "\n")
    paths["verdicts"] = write_atomic(directory / "verdicts.txt", "".join(f"{d}: {v}\n" for d, v in result.verdicts().items()))
    paths["loo"] = write_atomic(directory / "leave_one_out.csv", safe_csv(result.loo_table()))
    paths["power_scaling"] = write_atomic(directory / "power_scaling.csv", safe_csv(result.power_scaling_table()))
    for d, png in (spec_curves(result) if curves is None else curves).items():
        paths[f"curve:{d}"] = write_atomic(directory / f"spec_curve_{safe_name(d)}.png", png)  # d comes from the data
    return paths


def load_result(directory: str | Path) -> dict | None:
    """The saved ``sensitivity.json`` of a run (None if there is none, or it is not one)."""
    from metaeval.files import read_json_object

    return read_json_object(Path(directory) / "sensitivity.json", 256 * 2**20)


def saved_extras(directory: str | Path, evidence) -> dict | None:
    """The report section from a saved run, if it was made from this same evidence (else None).

    The file is in the output folder, which metaeval does not trust: one that does not have the shape a run
    writes is left out of the report, with a note, rather than stopping it.
    """
    from metaeval.harmonise import evidence_digest

    saved = load_result(directory)
    if saved is None or saved.get("evidence_digest") != evidence_digest(evidence):
        return None
    try:
        g = saved["grid"]
        grid = Grid(baseline=g["baseline"], levels=g["levels"], inclusion=g["inclusion"], mode=g["mode"],
                    decision_probability=g["decision_probability"], source=g["source"])
        result = SensitivityResult(grid, saved["scenarios"], saved["results"], saved["loo"], saved["power_scaling"], saved["evidence_digest"])
        return report_extras(result)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        log.warning("%s is not a sensitivity run's record (%s: %s); the report leaves the sensitivity section out",
                    Path(directory) / "sensitivity.json", type(err).__name__, err)
        return None
