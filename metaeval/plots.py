"""Figures as files and in notebooks (`metaeval plot`, ``metaeval.forest_plot``): matplotlib with the ArviZ look.
The forest plot's rows (:func:`forest_rows`), colours and markers are also what the report's own SVG figures
(:mod:`metaeval.charts`) draw.

The figures are drawn from the evidence table and a fit's result (:class:`metaeval.result.Result`; not from
posterior draws), so they can be made for either engine and without loading a
fit. They use arviz-plots' ``arviz-variat`` matplotlib style (read from its
style file, so arviz itself is not imported) and are saved byte-for-byte
reproducibly: PNG without a Software tag, SVG with a fixed hash salt and no
date, PDF without dates.

matplotlib is imported inside the functions: the CLI imports this module lazily,
and ``metaeval --help`` must not pay for it.
"""

from __future__ import annotations

import io
from contextlib import contextmanager
from pathlib import Path

from metaeval.cells import finite, flag, present
from metaeval.files import write_atomic
from metaeval.words import design_label, design_rank, metric_units, shortened

#: Colour and marker per design: filled shapes get less solid as the design weakens.
DESIGN_STYLE = {
    "rct": ("#1b6f8a", "o"),
    "matched_register": ("#228306", "s"),
    "comparison_group": ("#7c2695", "D"),
    "area_comparison": ("#c0392b", "^"),
    "before_after": ("#b9770e", "v"),
    "target_benchmark": ("#a77e4f", "P"),
    "single_arm": ("#555555", "X"),
    "unspecified": ("#36acc6", "o"),
}
#: Text drawn by matplotlib comes from data files: keep it short and free of mathtext.
_MAX_LABEL = 48
_FORMATS = ("png", "svg", "pdf")


def _style_path() -> str | None:
    """arviz-plots' matplotlib style file, found without importing arviz_plots."""
    import importlib.util

    spec = importlib.util.find_spec("arviz_plots")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "styles" / "arviz-variat.mplstyle"
    return str(path) if path.exists() else None


@contextmanager
def plot_style():
    """The ArviZ look plus fixed settings that keep saved files reproducible."""
    import matplotlib as mpl
    import matplotlib.style

    sheets = [p for p in (_style_path(),) if p]
    with matplotlib.style.context(sheets or "default"), mpl.rc_context({
        "svg.hashsalt": "metaeval",
        "figure.constrained_layout.use": True,
        "font.size": 10,
        "axes.titlesize": 12,
        "axes.labelsize": 10,
        "xtick.labelsize": 9,
        "ytick.labelsize": 9,
        "legend.fontsize": 8.5,
        "text.usetex": False,
    }):
        yield


def plain_text(value, limit: int = _MAX_LABEL) -> str:
    """Data text made safe for matplotlib: no mathtext ($), no line breaks, shortened."""
    return shortened(value, limit).replace("$", r"\$")


def _get(row, column, default=None):
    value = row.get(column, default) if hasattr(row, "get") else default
    return value if present(value) else default


def _interval(x, se, z=1.959963984540054) -> dict:
    return {"raw_x": x, "raw_low": x - z * se if se is not None else None, "raw_high": x + z * se if se is not None else None}


def _shrunken(p) -> dict:
    """The plotted point and interval of a posterior summary (a ProjectEffect or Posterior; None: not fitted)."""
    if p is None:
        return {"x": None, "low": None, "high": None}
    return {"x": finite(p.mean), "low": finite(p.hdi_low), "high": finite(p.hdi_high)}


def forest_rows(evidence, result, domain: str) -> list[dict]:
    """The rows of a domain's forest plot, top to bottom, as plain data.

    Row kinds: ``project`` (a project's shrunken effect ``x``/``low``/``high``, and its
    raw estimate ``raw_x``/``raw_low``/``raw_high`` when it has exactly one), ``estimate``
    (one estimate's raw value, and its shrunken effect where the result has one per
    estimate, as the one-level exact engine does for a project with several estimates),
    ``direction`` (a finding with a direction and no number), ``pooled`` and
    ``predictive``. Projects are ordered by design strength, then name. Rows of a
    project the model left out carry ``in_model=False``. Split from the drawing so
    tests can check what is plotted without reading pixels.
    """
    dom = result.domains[domain]
    effects = {p.key: p for p in dom.projects}
    projects_in = {p.project for p in dom.projects}
    names: dict[str, str] = {}
    designs: dict[str, str] = {}
    items: dict[str, list[dict]] = {}  # project -> its estimates (raw and direction-only)

    table = None
    if evidence is not None and len(evidence) and "domain" in evidence.columns:
        table = evidence[evidence["domain"].astype(str) == str(domain)]
    for _, r in (table.iterrows() if table is not None else []):
        eid = str(_get(r, "estimate_id", ""))
        pid = str(_get(r, "project_id", eid))
        names.setdefault(pid, str(_get(r, "project_name", pid)))
        design = str(_get(r, "design", "unspecified"))
        designs.setdefault(pid, design)
        outcome = _get(r, "outcome") or eid
        estimand = _get(r, "estimand")
        label = f"{outcome} [{estimand}]" if estimand else str(outcome)
        base = {"label": label, "design": design, "project": pid, "estimate_id": eid}
        if flag(_get(r, "direction_only")):
            reported = _get(r, "direction")
            items.setdefault(pid, []).append({**base, "kind": "direction", "direction": reported,
                                              "counted": _get(r, "direction_counted", reported),
                                              "significant": flag(_get(r, "significant"))})
            continue
        yi, sei = finite(_get(r, "yi")), finite(_get(r, "sei"))
        if flag(_get(r, "poolable")) and yi is not None and sei is not None:
            items.setdefault(pid, []).append({**base, "kind": "estimate", **_interval(yi, sei)})

    for p in dom.projects:  # effects the evidence does not know (a result read without its evidence)
        if p.project in items:
            continue
        names.setdefault(p.project, p.project)
        designs.setdefault(p.project, p.design)
        items[p.project] = ([{"kind": "estimate", "label": "raw estimate", "design": p.design, "project": p.project,
                              "estimate_id": p.estimate_id, **_interval(p.raw, p.raw_se)}] if p.raw is not None else [])

    order = sorted(items, key=lambda p: (design_rank(designs[p]), names[p].lower(), p))
    rows: list[dict] = []
    for pid in order:
        estimates = [i for i in items[pid] if i["kind"] == "estimate"]
        others = [i for i in items[pid] if i["kind"] != "estimate"]
        head = {"kind": "project", "label": names[pid], "design": designs[pid], "project": pid,
                "in_model": pid in projects_in, **_shrunken(effects.get(pid))}
        if pid not in effects and len(estimates) == 1:  # a result with one effect per estimate
            head.update(_shrunken(effects.get(estimates[0]["estimate_id"])))
        if len(estimates) == 1:
            head.update({k: v for k, v in estimates[0].items() if k.startswith("raw_")})
            estimates = []
        rows.append(head)
        for e in estimates:
            rows.append({**e, "in_model": pid in projects_in, **_shrunken(effects.get(e["estimate_id"]))})
        rows.extend({**o, "in_model": pid in projects_in} for o in others)
    if finite(dom.mu.mean) is not None:
        rows.append({"kind": "pooled", "label": "Pooled effect (μ)", "design": None, **_shrunken(dom.mu)})
    if finite(dom.theta_new.mean) is not None:
        rows.append({"kind": "predictive", "label": "A new project (predictive)", "design": None, **_shrunken(dom.theta_new)})
    return rows


def forest_plot(evidence, result, domain: str):
    """A domain's forest plot as a matplotlib Figure.

    Per project: its shrunken effect with the posterior HDI (filled marker) and
    each raw estimate with its 95% CI from yi and sei (hollow marker), coloured
    and shaped by design; direction-only findings as arrows; then the pooled
    effect μ (diamond over its HDI) and the predictive interval for a new project.
    The x axis is the domain's metric and says which direction is beneficial.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Polygon

    if domain not in result.domains:
        raise KeyError(f"domain {domain!r} is not in the result (have: {', '.join(sorted(result.domains))})")
    dom = result.domains[domain]
    rows = forest_rows(evidence, result, domain)
    hdi_pct = f"{100 * dom.mu.hdi_prob:g}%"

    with plot_style():
        height = 1.9 + 0.3 * len(rows)
        fig = Figure(figsize=(8.4, height), dpi=100)
        ax = fig.add_subplot()
        n = len(rows)
        ys = list(range(n, 0, -1))
        xs_all = [v for r in rows for k, v in r.items() if k in ("x", "low", "high", "raw_x", "raw_low", "raw_high") and v is not None]
        span = (max(xs_all) - min(xs_all)) if len(xs_all) > 1 else 1.0
        span = span or 1.0
        arrow_len = 0.08 * span
        designs_seen: list[str] = []

        for y, r in zip(ys, rows):
            kind = r["kind"]
            colour, marker = DESIGN_STYLE.get(r.get("design") or "", ("#333333", "o"))
            if r.get("design") and r["design"] not in designs_seen:
                designs_seen.append(r["design"])
            alpha = 1.0 if r.get("in_model", True) else 0.4
            x, lo, hi = r.get("x"), r.get("low"), r.get("high")
            rx, rlo, rhi = r.get("raw_x"), r.get("raw_low"), r.get("raw_high")
            both = x is not None and rx is not None
            if kind in ("project", "estimate"):
                if rx is not None:  # raw: hollow marker, thin 95% CI
                    ry = y + 0.17 if both else y
                    if rlo is not None and rhi is not None:
                        ax.plot([rlo, rhi], [ry, ry], color=colour, lw=1.0, alpha=alpha)
                    ax.plot([rx], [ry], marker=marker, mfc="white", mec=colour, mew=1.4, ms=6.5, alpha=alpha, ls="none")
                if x is not None:  # shrunken: filled marker, thick HDI
                    sy = y - 0.17 if both else y
                    if lo is not None and hi is not None:
                        ax.plot([lo, hi], [sy, sy], color=colour, lw=2.6, alpha=alpha, solid_capstyle="butt")
                    ax.plot([x], [sy], marker=marker, color=colour, ms=8, mec="white", mew=0.8, alpha=alpha, ls="none")
            elif kind == "direction":
                sign = {"increase": 1, "decrease": -1}.get(str(r.get("counted", r.get("direction"))))  # on this axis
                if sign is None:
                    ax.plot([0], [y], marker="|", color=colour, ms=10, ls="none", alpha=alpha)
                else:
                    ax.annotate("", xy=(sign * arrow_len, y), xytext=(0, y), alpha=alpha,
                                arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 1.4, "alpha": alpha})
                ax.text(sign * arrow_len * 1.25 if sign else arrow_len * 0.25, y, direction_text(r), va="center",
                        ha="left" if (sign or 1) > 0 else "right", fontsize=8, color=colour, alpha=alpha)
            elif kind == "pooled" and lo is not None and hi is not None:
                ax.add_patch(Polygon([(lo, y), (x, y + 0.27), (hi, y), (x, y - 0.27)], closed=True,
                                     facecolor="#222222", edgecolor="#222222"))
            elif kind == "predictive" and lo is not None and hi is not None:
                ax.plot([lo, hi], [y, y], color="#222222", lw=1.6, ls=(0, (4, 2)))
                ax.plot([lo, hi], [y, y], color="#222222", lw=0, marker="|", ms=12)
                ax.plot([x], [y], marker="o", mfc="white", mec="#222222", ms=5, ls="none")

        # No effect, the minimal important difference, the separator above the pooled rows.
        ax.axvline(0, color="#555555", lw=0.9, zorder=0)
        mid = finite(dom.mid)
        benefit = dom.beneficial
        if mid and benefit in ("increase", "decrease"):
            edge = mid if benefit == "increase" else -mid
            ax.axvline(edge, color="#888888", lw=0.8, ls=":", zorder=0)
        n_pooled = sum(r["kind"] in ("pooled", "predictive") for r in rows)
        if n_pooled:
            ax.axhline(n_pooled + 0.5, color="#bbbbbb", lw=0.8)

        ax.set_yticks(ys)
        labels = []
        for r in rows:
            text = plain_text(r["label"])
            if not r.get("in_model", True) and r["kind"] == "project":
                text = plain_text(r["label"], _MAX_LABEL - 13) + " (not pooled)"
            labels.append(text)
        ax.set_yticklabels(labels)
        for tick, r in zip(ax.get_yticklabels(), rows):
            if r["kind"] in ("project", "pooled", "predictive"):
                tick.set_fontweight("bold")
            else:
                tick.set_color("#444444")
                tick.set_fontstyle("italic")
        ax.set_ylim(0.4, n + 0.6)
        ax.tick_params(axis="y", length=0)
        ax.spines["left"].set_visible(False)

        units = metric_units(dom.metric)
        arrow = {"increase": "higher is better →", "decrease": "← lower is better"}.get(benefit, "direction of benefit not stated")
        ax.set_xlabel(f"{plain_text(dom.label)}: {units}\n{arrow}")
        fig.suptitle(f"{plain_text(dom.label, 60)}: raw and shrunken project effects", x=0.01, ha="left",
                     fontsize=12, fontweight="bold")
        if benefit in ("increase", "decrease"):
            from matplotlib.transforms import blended_transform_factory

            at_zero = blended_transform_factory(ax.transData, ax.transAxes)
            ax.text(0, 1.01, "  favours the initiative →" if benefit == "increase" else "← favours the initiative  ",
                    transform=at_zero, ha="left" if benefit == "increase" else "right", va="bottom",
                    fontsize=8.5, color="#1b6f8a")
        handles = [Line2D([], [], color=DESIGN_STYLE.get(d, ("#333333", "o"))[0], marker=DESIGN_STYLE.get(d, ("#333333", "o"))[1],
                          ls="none", ms=7, label=design_label(d))
                   for d in sorted(designs_seen, key=design_rank)]
        kinds = {r["kind"] for r in rows}
        if any(r.get("raw_x") is not None for r in rows):
            handles.append(Line2D([], [], color="#555555", marker="o", mfc="white", lw=1.0, ms=6, label="raw estimate, 95% CI"))
        if any(r.get("x") is not None for r in rows if r["kind"] in ("project", "estimate")):
            handles.append(Line2D([], [], color="#555555", marker="o", lw=2.6, ms=7, label=f"shrunken effect, {hdi_pct} HDI"))
        if "direction" in kinds:
            handles.append(Line2D([], [], color="#555555", marker=">", lw=1.4, ms=5, label="direction only, no number"))
        if "pooled" in kinds:
            handles.append(Line2D([], [], color="#222222", marker="D", ls="none", ms=7, label=f"pooled effect μ, {hdi_pct} HDI"))
        if "predictive" in kinds:
            handles.append(Line2D([], [], color="#222222", lw=1.6, ls=(0, (4, 2)), label=f"new project, {hdi_pct} predictive interval"))
        if mid and benefit in ("increase", "decrease"):
            handles.append(Line2D([], [], color="#888888", lw=0.8, ls=":", label=f"minimal important difference ({mid:g})"))
        fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
    return fig


def direction_text(row: dict) -> str:
    """What a direction-only finding reports, in the source's words ('significant decrease, no number'),
    and, where the domain's scale runs the other way for this outcome, that it is counted as its mirror."""
    direction, significant = row.get("direction"), row.get("significant")
    if direction == "none":
        return "no effect reported, no number"
    sig = {True: "significant ", False: "non-significant "}.get(significant, "")
    counted = row.get("counted", direction)
    mirrored = f" (counted as an {counted}: lower is better here)" if counted in ("increase", "decrease") and counted != direction else ""
    return f"reported: {sig}{direction or 'no direction'}{mirrored}, no number"


def figure_bytes(fig, fmt: str = "png", dpi: int = 110) -> bytes:
    """The figure as PNG, SVG or PDF bytes; the same figure gives the same bytes."""
    fmt = fmt.lower()
    if fmt not in _FORMATS:
        raise ValueError(f"unsupported figure format {fmt!r}: use one of {', '.join(_FORMATS)}")
    metadata = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None},
                "pdf": {"CreationDate": None, "ModDate": None, "Creator": None, "Producer": None}}[fmt]
    buffer = io.BytesIO()
    with plot_style():
        fig.savefig(buffer, format=fmt, dpi=dpi, metadata=metadata)
    return buffer.getvalue()


def save_figure(fig, path: str | Path, fmt: str | None = None, dpi: int = 110) -> Path:
    """Write the figure atomically; the format follows the file suffix unless given."""
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".") or "png").lower()
    data = figure_bytes(fig, fmt, dpi=dpi)
    write_atomic(path, data)
    return path
