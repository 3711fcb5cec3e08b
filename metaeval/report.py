"""The self-contained HTML report: what the evidence says, per outcome domain, how sure we are, and why.

``render_report`` is a pure function of the evidence table and a fit's
:class:`~metaeval.result.Result` plus optional extra sections: :mod:`metaeval.views` turns them
into plain data, and ``templates/report.html`` (Jinja2, autoescaped) lays it out with the CSS of
``templates/report.css``. The page needs nothing but itself: figures are embedded as data URIs,
styles are inline, there is no script, and a Content-Security-Policy forbids loading anything
else. ``write_report`` writes it atomically.
"""

from __future__ import annotations

import base64
import struct
import sys
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from metaeval import views, views_fit, views_initiatives
from metaeval.files import write_atomic
from metaeval.result import Result

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
EXTRA_SECTIONS = views_fit.EXTRA_SECTIONS


@cache
def _template():
    """The page template and its CSS, package files read through importlib.resources."""
    from importlib import resources

    from jinja2 import Environment, StrictUndefined

    folder = resources.files("metaeval") / "templates"
    env = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=False, lstrip_blocks=False, keep_trailing_newline=True)
    return env.from_string(folder.joinpath("report.html").read_text(encoding="utf-8")), folder.joinpath("report.css").read_text(encoding="utf-8")


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    return None


def figure(fig: Any, alt: str, caption: str | None = None, *, dpi: int = 110) -> dict:
    """An embedded figure: a matplotlib Figure, PNG bytes or SVG text as a data URI, its CSS size the figure's at 96 dpi."""
    if hasattr(fig, "savefig"):
        from metaeval.plots import figure_bytes

        data = figure_bytes(fig, "png", dpi=dpi)
        plt = sys.modules.get("matplotlib.pyplot")  # ours are not pyplot's; a caller's may be
        if plt is not None:
            plt.close(fig)
    elif isinstance(fig, (bytes, bytearray, str)):
        data = fig.encode("utf-8") if isinstance(fig, str) else bytes(fig)
    else:
        raise ValueError(f"a figure must be a matplotlib Figure, PNG bytes or SVG text, not {type(fig).__name__}")
    png = _png_size(data)
    if png:
        mime, (width, height) = "image/png", (round(v * 96 / dpi) for v in png)
    elif data.lstrip()[:5] in (b"<?xml", b"<svg ") or b"<svg" in data[:400]:
        mime, width, height = "image/svg+xml", None, None
    else:
        raise ValueError("a figure must be a matplotlib Figure, PNG bytes or SVG text")
    return {"src": f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}", "alt": alt, "width": width,
            "height": height, "caption": caption, "svg": None}


_FOREST_CAPTION = ("Per project: the raw estimate with its 95% confidence interval (hollow marker) and the shrunken project "
                   "effect with its {hdi} credible interval (filled marker), coloured and shaped by design. Bottom: the "
                   "average effect μ (diamond) and the predictive interval for a new initiative (dashed). Faded rows did not "
                   "enter this model.")
#: A domain's forest plot in the report draws each estimate's and finding's own row up to this many rows; beyond,
#: only the projects' rows (the tables list every estimate).
FOREST_MAX_ROWS = 120


def chart(view: dict, caption: str | None = None) -> dict:
    """A figure drawn from :mod:`metaeval.charts` view data, as inline SVG (our own template's output, escaped there),
    with the same SVG as a file to download: a browser copies an <img>, not an inline figure, into a document."""
    from markupsafe import Markup

    from metaeval.charts import svg

    text = svg(view)
    return {"svg": Markup(text), "src": None, "alt": view["alt"], "caption": caption, "filename": f"{view['name']}.svg",
            "download": f"data:image/svg+xml;base64,{base64.b64encode(text.encode('utf-8')).decode('ascii')}"}


def _forest(evidence, result: Result, d: str) -> tuple[dict | None, str | None]:
    """A domain's forest plot as an inline figure, or why there is none."""
    from metaeval.charts import forest_chart

    try:
        view = forest_chart(evidence, result, d, max_rows=FOREST_MAX_ROWS)
        if view is None:
            return None, "No forest plot: this domain has no estimate with a number or a direction to show."
        caption = _FOREST_CAPTION.format(hdi=f"{100 * result.domains[d].mu.hdi_prob:g}%")
        if view["omitted"]:
            caption += (f" So many rows would be too tall to read: the {view['omitted']} rows of individual estimates and findings "
                        "are left out, one row per project (a project with a single estimate shows it beside its shrunken effect); "
                        "the evidence tables list every estimate.")
        return chart(view, caption), None
    except Exception as err:  # noqa: BLE001 - one bad figure must not lose the whole report
        return None, f"The forest plot could not be drawn: {err}"


def render_report(
    evidence,
    result: Result,
    *,
    extras: Mapping | None = None,
    appraisal=None,
    analysis=None,
    title: str = "metaeval report",
    progress: Callable[[str, int, int], None] | None = None,
    dpi: int = 110,
) -> str:
    """The report as one self-contained HTML page.

    ``evidence`` is the harmonised table (``metaeval.load_evidence``); ``result`` a fit's
    :class:`~metaeval.result.Result`. ``extras`` may hold ``robustness``, ``comparison``,
    ``sensitivity`` and ``calibration`` (each a dict with optional ``title``, ``text``, ``table``
    (DataFrame or records) and ``figures`` (matplotlib Figures, PNG bytes or SVG text, bare or as
    ``{"caption", "figure"}``), or plain text); a missing one is reported as not available. Other
    keys become further sections. ``analysis`` (:func:`metaeval.analysis.analyse`) fills the
    initiative sections: the initiatives × domains matrix, the comparison, costs, the plan for the
    next evaluation and a card per initiative; without it they are made from the result alone (no
    draws: probabilities approximate, no comparison or plan). "What the appraisal rules move" shows the
    record of ``bench/rules.py`` where ``result`` is of the evidence it was made on (the same evidence
    digest), and says otherwise that it does not apply. ``progress(description, done,
    total)`` is called as each part is built; ``dpi`` is the resolution of matplotlib figures in ``extras`` (the
    report's own are SVG, :mod:`metaeval.charts`). Same inputs, same text: nothing depends on the clock.
    """
    from metaeval import __version__

    if not isinstance(result, Result):
        raise TypeError(f"the report is made from a metaeval.result.Result, not {type(result).__name__}")
    extras = dict(extras or {})
    keys = [*EXTRA_SECTIONS, *sorted(k for k in extras if k not in EXTRA_SECTIONS)]
    total, done = 2 + len(result.domains) + 6 + len(keys), 0

    def step(description: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(description, done, total)

    rows = views.rows_of(evidence)
    names = views.Names(rows, result)
    overview = views.overview(result, rows, names)
    step("overview")
    context = _initiative_sections(evidence, result, analysis, names)
    step("initiatives")
    domains = []
    for d in result.domains:
        section = views.domain(result, rows, d, names)
        section["figure"], section["figure_missing"] = _forest(evidence, result, d)
        domains.append(section)
        step(f"domain {result.domains[d].label}")
    context["evidence"] = views.evidence(rows, names)
    step("evidence table")
    context["excluded"] = views.excluded(result, rows, names)
    step("left-out estimates")
    context["findings"] = views.findings(result, rows, names, appraisal)
    context["risk_of_bias"] = views.risk_of_bias(appraisal, names)
    from metaeval.appraisal import bundled_rules_record, rules_moves

    context["rules"] = views.rules_moves(rules_moves(bundled_rules_record(), result.provenance.evidence_sha256), names)
    step("direction-only findings")
    context["assumptions"] = views.assumptions(rows, names)
    step("assumptions")
    context["priors"] = views_fit.priors(result)
    step("priors")
    context["diagnostics"] = views_fit.diagnostics(result)
    step("diagnostics")
    sections = []
    for key in keys:
        section = views_fit.extra(key, extras.get(key))
        embedded = []
        for i, (fig, caption) in enumerate(section.get("figures") or []):
            try:
                embedded.append(figure(fig, caption or f"{section['title']}, figure {i + 1}", caption, dpi=dpi))
            except Exception as err:  # noqa: BLE001
                embedded.append({"src": None, "svg": None, "error": f"A figure could not be embedded: {err}"})
        section["figures"] = embedded
        sections.append(section)
        step(section["title"])
    toc = ([{"anchor": "overview", "title": "Overview"}] + [{"anchor": a, "title": t} for a, t in _INITIATIVE_TOC]
           + [{"anchor": s["anchor"], "title": s["label"]} for s in domains]
           + [{"anchor": a, "title": t} for a, t in (("evidence", "The evidence"), ("risk-of-bias", "Risk of bias per estimate"),
                                                    ("rules-move", "What the appraisal rules move"),
                                                    ("excluded", "Estimates left out of pooling"),
                                                    ("direction-only", "Findings without numbers"), ("assumptions", "Stated assumptions"),
                                                    ("priors", "Priors and bias assumptions"), ("diagnostics", "Diagnostics"))]
           + [{"anchor": s["anchor"], "title": s["title"]} for s in sections] + [{"anchor": "reading", "title": "How to read this report"}])
    from markupsafe import Markup

    template, css = _template()
    return template.render(title=title, csp=_CSP, css=Markup(css),  # the package's own file, not data
                           header=views.header(result, rows), toc=toc, overview=overview,
                           domains=domains, extras=sections, version=__version__, engine=result.engine, **context)


_INITIATIVE_TOC = (("at-a-glance", "Initiatives at a glance"), ("compare", "Which initiative does more?"), ("costs", "Costs beside effects"),
                   ("plan", "What would settle it"), ("initiatives", "The initiatives, one by one"))


def _initiative_sections(evidence, result: Result, analysis, names) -> dict:
    """The matrix, comparison, costs, plan and cards, as view data with their figures embedded."""
    from metaeval import charts
    from metaeval.analysis import analyse

    if analysis is None:
        analysis = analyse(evidence, result)
    ce_figure = plan_figure = None
    if analysis.cost_effectiveness is not None and analysis.cost_effectiveness.results:
        ce_figure = _try_chart(lambda: charts.ceac_chart(analysis.cost_effectiveness, names.projects),
                               "Probability that the initiative is worth it against the price one would pay per person helped "
                               "(solid: bias-adjusted pooled effect; dashed: the trial alone).")
    if analysis.plan is not None and analysis.plan.domains:
        plan_figure = _try_chart(lambda: charts.plan_chart(analysis.plan),
                                 "Left: the expected width of the average effect's interval after a new randomised evaluation, as a share of "
                                 "today's. Right: the probability that the verdict changes. One line per outcome.")
    return {"matrix": views_initiatives.matrix(analysis, result, names), "comparison": views_initiatives.comparison_view(analysis, names),
            "costs": views_initiatives.costs_view(analysis, names, ce_figure), "plan": views_initiatives.plan_view(analysis, plan_figure),
            "cards": views_initiatives.cards(analysis, result, names), "shifts_missing": analysis.missing.get("shifts")}


def _try_chart(draw: Callable[[], dict], caption: str) -> dict:
    try:
        return chart(draw(), caption)
    except Exception as err:  # noqa: BLE001 - one bad figure must not lose the whole report
        return {"src": None, "svg": None, "error": f"The figure could not be drawn: {err}"}


def write_report(
    path: str | Path,
    evidence,
    result: Result,
    *,
    extras: Mapping | None = None,
    appraisal=None,
    analysis=None,
    title: str = "metaeval report",
    progress: bool | None = None,
) -> Path:
    """Render the report and write it atomically; returns the path.

    ``progress``: show a progress bar on stderr (default: when stderr is a terminal).
    """
    path = Path(path)
    if progress is None:
        progress = sys.stderr.isatty()
    if progress:
        from rich.console import Console
        from rich.markup import escape
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("[bold]report[/bold] {task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("starting", total=None)

            def advance(description: str, done: int, total: int) -> None:
                bar.update(task, description=escape(description), completed=done, total=total)

            text = render_report(evidence, result, extras=extras, appraisal=appraisal, analysis=analysis, title=title, progress=advance)
    else:
        text = render_report(evidence, result, extras=extras, appraisal=appraisal, analysis=analysis, title=title)
    write_atomic(path, text)
    return path
