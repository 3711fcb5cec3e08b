"""The self-contained HTML report: what the evidence says, per outcome domain, and why.

``render_report`` is a pure function of the evidence table and a fit summary (the
dict the MCMC and exact engines produce, DESIGN.md) plus optional extra sections;
``write_report`` writes its text atomically. The page needs nothing but itself:
figures are embedded as data URIs, styles are inline, there is no script, and a
Content-Security-Policy forbids loading anything else.

All text from data files (names, quotes, notes, reasons) is untrusted and is
escaped: markup is built with :func:`tag`, which escapes every child and attribute
that is not already :class:`Html`.
"""

from __future__ import annotations

import base64
import html
import math
import re
import struct
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from metaeval.cells import flag, present
from metaeval.files import write_atomic
from metaeval.plots import (
    DESIGN_ORDER,
    design_label,
    metric_units,
)

#: Sections other engineers may supply through ``extras``, in report order: key -> (title, what is missing).
EXTRA_SECTIONS = {
    "comparison": ("Model variants compared", "No model comparison was run for this report (the sensitivity command compares model variants)."),
    "sensitivity": ("Sensitivity to priors and bias assumptions",
                    "No sensitivity analysis was run for this report (run the sensitivity command to add one)."),
    "calibration": ("Calibration of the model", "No calibration check (simulation-based calibration) was run for this report."),
}
#: Diagnostics gate thresholds (DESIGN.md): shown beside the values.
GATE = {"rhat_max": ("R-hat, largest", "≤ 1.01"), "ess_bulk_min": ("bulk ESS, smallest", "≥ 400"),
        "ess_tail_min": ("tail ESS, smallest", "≥ 400"), "divergences": ("divergent transitions", "0")}
_DECIMALS = {"smd": 2, "log_or": 2, "md": 2, "grade": 2, "share": 3, "pp": 1, "hours": 0, "count": 1, "score": 1,
             "dkk": 0, "dkk_1000": 1}
_UNIT_SHORT = {"smd": "SD", "pp": "percentage points", "hours": "hours", "grade": "grade points", "score": "points",
               "dkk": "DKK", "dkk_1000": "thousand DKK", "share": "", "count": "", "log_or": "", "md": ""}
_UNIT_COMPACT = {"smd": "SD", "pp": "pp", "grade": "grade points", "dkk_1000": "1,000 DKK",
                 "log_or": "log odds ratio", "md": "mean difference"}
_CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'")


# ---------------------------------------------------------------------------- escaping markup


class Html(str):
    """Markup that is already safe: it is inserted as is, everything else is escaped."""

    __slots__ = ()


def esc(value: Any) -> Html:
    """Escaped text (``Html`` passes through unchanged); None and NaN become an empty string."""
    if isinstance(value, Html):
        return value
    if not present(value):
        return Html("")
    return Html(html.escape(str(value), quote=True))


def tag(name: str, /, *children: Any, **attrs: Any) -> Html:
    """``<name attrs>children</name>`` with children and attribute values escaped.

    ``class_`` gives ``class``; an attribute set to None or False is left out, True gives
    a bare attribute. Children may be strings, ``Html``, numbers or iterables of them.
    """
    parts = []
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        key = key.rstrip("_").replace("_", "-")
        parts.append(f" {key}" if value is True else f' {key}="{html.escape(str(value), quote=True)}"')
    inner = join(children)
    if name in ("img", "meta", "br", "hr", "link", "col"):
        return Html(f"<{name}{''.join(parts)}>")
    return Html(f"<{name}{''.join(parts)}>{inner}</{name}>")


def join(children: Iterable[Any], sep: str = "") -> Html:
    """Escaped children joined by ``sep`` (itself trusted markup); nested iterables are flattened."""
    out = []
    for child in children:
        if isinstance(child, (str, int, float)) or child is None:
            out.append(esc(child))
        elif isinstance(child, Iterable):
            out.append(join(child))
        else:
            out.append(esc(child))
    return Html(sep.join(out))


# ---------------------------------------------------------------------------- values and numbers


def _num(value: Any) -> float | None:
    if not present(value) or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _text(value: Any) -> str:
    if not present(value):
        return ""
    if isinstance(value, dict):
        return "; ".join(f"{k} = {v}" for k, v in value.items())
    return str(value).strip()


def fmt_num(x: Any, metric: Any = None) -> str:
    """A number at the precision the domain's metric warrants; a true minus sign; '–' when missing."""
    value = _num(x)
    if value is None:
        return "–"
    decimals = _DECIMALS.get(str(metric)) if present(metric) else None
    if decimals is None:
        text = f"{value:.3g}"
    else:
        text = f"{value:,.{decimals}f}"
        if float(text.replace(",", "")) == 0:
            text = f"{0:.{decimals}f}"  # no "-0.0"
    return text.replace("-", "−")


def fmt_prob(p: Any) -> str:
    """A probability as a percentage, never claiming certainty: '>99%' and '<1%' at the ends."""
    value = _num(p)
    if value is None:
        return "–"
    if value > 0.995:
        return ">99%"
    if value < 0.005:
        return "<1%"
    return f"{100 * value:.0f}%"


def fmt_interval(low: Any, high: Any, metric: Any = None) -> str:
    """'a to b', each end formatted for the metric."""
    return f"{fmt_num(low, metric)} to {fmt_num(high, metric)}"


def unit_text(metric: Any) -> str:
    """The unit a number in this metric is read in ('' when the number speaks for itself or is unknown)."""
    if not present(metric):
        return ""
    return _UNIT_SHORT.get(str(metric), "")


def _with_unit(text: str, metric: Any) -> str:
    unit = unit_text(metric)
    return f"{text} {unit}" if unit else text


def _pct_hdi(block: Mapping | None) -> str:
    prob = _num((block or {}).get("hdi_prob")) or 0.95
    return f"{100 * prob:g}%"


def verdict(p_beneficial: Any) -> tuple[str, str]:
    """A plain-language reading of P(beneficial) and a CSS class for it."""
    p = _num(p_beneficial)
    if p is None:
        return "Not estimated", "none"
    for threshold, words, css in ((0.975, "Very likely beneficial", "good2"), (0.9, "Likely beneficial", "good1"),
                                  (0.7, "Possibly beneficial", "lean"), (0.3, "Unclear", "unclear"),
                                  (0.1, "Possibly adverse", "leanbad"), (0.025, "Likely adverse", "bad1")):
        if p >= threshold:
            return words, css
    return "Very likely adverse", "bad2"


# ---------------------------------------------------------------------------- evidence helpers


def _rows(evidence) -> list[dict]:
    """The evidence table as a list of plain dicts (empty for None)."""
    if evidence is None or len(evidence) == 0:
        return []
    return evidence.to_dict("records")


def _pooled_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if flag(r.get("poolable")) and not flag(r.get("direction_only"))
            and _num(r.get("yi")) is not None and _num(r.get("sei")) is not None]


def evidence_basis(evidence, summary: Mapping, domain: str) -> dict:
    """How much of a domain's pooled result rests on randomised vs weaker designs.

    Counts of pooled estimates by design and the approximate share of the statistical
    weight each design carries: inverse-variance weights 1/(sei² + τ²) with τ at its
    posterior mean, before any discount the bias model gives weaker designs.
    Direction-only findings are counted apart (they carry no weight here).
    """
    dom = summary["domains"][domain]
    projects_in = {str(p) for p in dom.get("projects_in") or []}
    rows = [r for r in _rows(evidence) if str(r.get("domain")) == str(domain)]
    used = [r for r in _pooled_rows(rows) if not projects_in or str(r.get("project_id")) in projects_in]
    tau = _num((dom.get("tau") or {}).get("mean")) or 0.0
    counts: dict[str, int] = {}
    weights: dict[str, float] = {}
    for r in used:
        d = str(r.get("design") or "unspecified")
        counts[d] = counts.get(d, 0) + 1
        weights[d] = weights.get(d, 0.0) + 1.0 / (float(r["sei"]) ** 2 + tau**2)
    if not used and dom.get("designs"):
        counts = {str(k): int(v) for k, v in dom["designs"].items()}
    total_w = sum(weights.values())
    share = {d: w / total_w for d, w in weights.items()} if total_w > 0 else {}
    direction_only = [r for r in rows if flag(r.get("direction_only"))]
    n = sum(counts.values())
    return {
        "counts": dict(sorted(counts.items(), key=lambda kv: _rank(kv[0]))),
        "weight_share": dict(sorted(share.items(), key=lambda kv: _rank(kv[0]))),
        "n_estimates": n,
        "n_randomised": counts.get("rct", 0),
        "randomised_weight": share.get("rct", 0.0) if share else None,
        "n_direction_only": len(direction_only),
    }


def _rank(design: str) -> int:
    return DESIGN_ORDER.index(design) if design in DESIGN_ORDER else len(DESIGN_ORDER)


def domain_sentences(evidence, summary: Mapping, domain: str) -> list[str]:
    """The plain-language summary of one domain, sentence by sentence (plain text).

    The fit's own notes on the domain are shown apart (``domain_notes``).
    """
    dom = summary["domains"][domain]
    metric = dom.get("metric")
    mu, new = dom.get("mu") or {}, dom.get("theta_new") or {}
    benefit = dom.get("beneficial")
    better = {"increase": "an increase", "decrease": "a decrease"}.get(str(benefit), "a change in the beneficial direction")
    out: list[str] = []
    if _num(mu.get("mean")) is None:
        out.append("Nothing was pooled in this domain: no estimate with a usable effect size and standard error.")
        return out
    out.append(
        f"Pooled effect: {_with_unit(fmt_num(mu.get('mean'), metric), metric)} "
        f"({_pct_hdi(mu)} credible interval {_with_unit(fmt_interval(mu.get('hdi_low'), mu.get('hdi_high'), metric), metric)})."
    )
    out.append(f"Probability that an initiative of this kind is beneficial ({better} is beneficial here): "
               f"{fmt_prob(mu.get('p_beneficial'))}.")
    mid = _num(dom.get("mid"))
    if mid is not None and _num(mu.get("p_mid")) is not None:
        out.append(f"Probability that the effect is larger than the minimal important difference of "
                   f"{_with_unit(fmt_num(mid, metric), metric)}: {fmt_prob(mu.get('p_mid'))}.")
    if _num(new.get("mean")) is not None:
        sentence = (f"A new project of this kind: {_pct_hdi(new)} predictive interval "
                    f"{_with_unit(fmt_interval(new.get('hdi_low'), new.get('hdi_high'), metric), metric)}")
        if _num(new.get("p_beneficial")) is not None:
            sentence += f"; probability that it is beneficial {fmt_prob(new.get('p_beneficial'))}"
        out.append(sentence + ".")
    basis = evidence_basis(evidence, summary, domain)
    n_projects = dom.get("n_projects")
    n_est = basis["n_estimates"] or dom.get("n_estimates") or 0
    weaker = {d: k for d, k in basis["counts"].items() if d not in ("rct", "unspecified")}
    unstated = basis["counts"].get("unspecified", 0)
    parts = [f"{_plural(n_est, 'pooled estimate')} from {_plural(n_projects or 0, 'project')}"]
    if basis["n_randomised"]:
        rct = f"{basis['n_randomised']} from randomised trials"
        w = basis["randomised_weight"]
        if w is not None:
            rct += " (all of the statistical weight)" if w > 0.995 else f" (about {fmt_prob(w)} of the statistical weight)"
        parts.append(rct)
    if weaker:
        parts.append(f"{sum(weaker.values())} from weaker designs ("
                     + ", ".join(f"{design_label(d)}: {k}" for d, k in weaker.items()) + ")")
    if unstated:
        parts.append(f"design not stated for {unstated}")
    out.append("Evidence: " + "; ".join(parts) + ".")
    if not basis["n_randomised"] and weaker:
        out.append("No randomised evidence: the result rests on weaker designs and on the bias assumptions made for them.")
    if basis["n_direction_only"]:
        out.append(f"{_plural(basis['n_direction_only'], 'finding')} reported only as a direction and significance "
                   "(see 'Findings without numbers').")
    if n_projects == 1:
        out.append("Only one project: how much projects differ (τ) cannot be learned from the data, so the predictive "
                   "interval for a new project mostly reflects τ's prior.")
    return out


def domain_notes(summary: Mapping, domain: str) -> tuple[list[str], int]:
    """The fit's notes on a domain, and how many of them only list an estimate left out (shown elsewhere)."""
    notes = [str(n) for n in summary["domains"][domain].get("notes") or []]
    kept = [n for n in notes if not n.startswith("Left out:")]
    return kept, len(notes) - len(kept)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# ---------------------------------------------------------------------------- the page


_CSS = """
:root { --ink:#1d2731; --muted:#5b6770; --line:#d9dee2; --bg:#ffffff; --soft:#f4f6f8; --accent:#1b6f8a; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--ink); background: var(--bg); margin: 0; }
main { max-width: 1100px; margin: 0 auto; padding: 1.5rem 1.25rem 4rem; }
h1 { font-size: 1.7rem; margin: 0.2rem 0 0.4rem; }
h2 { font-size: 1.3rem; margin: 2.4rem 0 0.6rem; padding-top: 0.6rem; border-top: 2px solid var(--line); }
h3 { font-size: 1.1rem; margin: 1.6rem 0 0.4rem; }
h3 small, .muted { color: var(--muted); font-weight: normal; }
.lede { color: var(--muted); margin-top: 0; }
nav.toc { background: var(--soft); padding: 0.6rem 1rem; border-radius: 6px; font-size: 0.92rem; }
nav.toc ol { margin: 0.2rem 0; padding-left: 1.2rem; columns: 2; }
.banner { padding: 0.7rem 1rem; border-radius: 6px; margin: 1rem 0; font-weight: 600; }
.banner.fail { background: #fdecea; border: 1px solid #e0a39c; color: #8a1c12; }
.banner.pass { background: #eaf5ee; border: 1px solid #9fcbb0; color: #1e5631; font-weight: normal; }
.banner.info { background: var(--soft); border: 1px solid var(--line); font-weight: normal; }
.domain { border: 1px solid var(--line); border-radius: 8px; padding: 0.2rem 1.1rem 1rem; margin: 1.2rem 0; }
.verdict { white-space: nowrap; display: inline-block; padding: 0.15rem 0.6rem; border-radius: 999px; font-weight: 600; font-size: 0.9rem; }
.verdict.good2 { background:#cfe9d8; } .verdict.good1 { background:#dff0e5; } .verdict.lean { background:#eef6f0; }
.verdict.unclear { background:#eeeeee; } .verdict.leanbad { background:#fbeee6; } .verdict.bad1 { background:#f8dccd; }
.verdict.bad2 { background:#f3c4ae; } .verdict.none { background:#eeeeee; }
ul.sentences { padding-left: 1.1rem; } ul.sentences li { margin: 0.15rem 0; }
.notes { color: var(--muted); font-size: 0.88rem; } .notes ul { margin: 0.2rem 0; padding-left: 1.1rem; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; display: block; }
figcaption { color: var(--muted); font-size: 0.88rem; margin-top: 0.3rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.86rem; margin: 0.5rem 0; }
th, td { border-bottom: 1px solid var(--line); padding: 0.3rem 0.5rem; text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.wide { width: 100%; table-layout: fixed; } table.wide td { overflow-wrap: anywhere; }
table.projects { width: 100%; } .file { overflow-wrap: anywhere; font-size: 0.8rem; }
tr.group th { background: #e8eef2; font-weight: normal; padding-top: 0.5rem; }
q { font-style: italic; color: #37424a; }
.na { color: var(--muted); font-style: italic; }
code { font-size: 0.85em; background: var(--soft); padding: 0 0.2rem; border-radius: 3px; overflow-wrap: anywhere; }
footer { margin-top: 3rem; color: var(--muted); font-size: 0.85rem; }
@media print { nav.toc { display: none; } .domain { break-inside: avoid; } }
"""


class _Steps:
    """Progress reporting: calls ``callback(description, done, total)`` as sections are built."""

    def __init__(self, callback: Callable[[str, int, int], None] | None, total: int):
        self.callback, self.total, self.done = callback, total, 0

    def __call__(self, description: str) -> None:
        self.done += 1
        if self.callback is not None:
            self.callback(description, self.done, self.total)


def _slug(text: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9_-]+", "-", str(text).lower()).strip("-") or "domain"
    slug, i = base, 2
    while slug in taken:
        slug, i = f"{base}-{i}", i + 1
    taken.add(slug)
    return slug


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    return None


def _img(data: bytes | str, alt: str, *, dpi: int = 110) -> Html:
    """An <img> with the figure as a data URI (PNG or SVG); its CSS size is the figure's size at 96 dpi."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    png = _png_size(data)
    if png:
        mime = "image/png"
        width, height = (round(v * 96 / dpi) for v in png)
    elif data.lstrip()[:5] in (b"<?xml", b"<svg ") or b"<svg" in data[:400]:
        mime, width, height = "image/svg+xml", None, None
    else:
        raise ValueError("a figure must be a matplotlib Figure, PNG bytes or SVG text")
    src = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return tag("img", src=src, alt=alt, width=width, height=height)


def _figure_data(fig: Any, dpi: int) -> bytes | str:
    """PNG bytes of a matplotlib Figure; PNG/SVG data as given."""
    if hasattr(fig, "savefig"):
        from metaeval.plots import figure_bytes

        data = figure_bytes(fig, "png", dpi=dpi)
        _close(fig)
        return data
    if isinstance(fig, (bytes, bytearray, str)):
        return bytes(fig) if isinstance(fig, bytearray) else fig
    raise ValueError(f"a figure must be a matplotlib Figure, PNG bytes or SVG text, not {type(fig).__name__}")


def _close(fig: Any) -> None:
    """Release a figure made through pyplot (which keeps it until closed); ours are not, so pyplot is not imported."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        plt.close(fig)


def _table(header: list[str], rows: Iterable[Iterable[Any]], *, numeric: Iterable[int] = (), class_: str | None = None) -> Html:
    numeric = set(numeric)
    head = tag("thead", tag("tr", [tag("th", h, scope="col") for h in header]))
    body = tag("tbody", [tag("tr", [tag("td", c, class_="num" if i in numeric else None) for i, c in enumerate(row)])
                         for row in rows])
    return tag("div", tag("table", head, body, class_=class_), class_="scroll")


def _na(text: str) -> Html:
    return tag("p", text, class_="na")


def _value(value: Any) -> Html:
    """Any JSON-like value as markup: dicts as key/value tables, lists as lists."""
    if isinstance(value, Mapping):
        if not value:
            return tag("span", "none", class_="na")
        return tag("table", tag("tbody", [tag("tr", tag("th", str(k), scope="row"), tag("td", _value(v)))
                                          for k, v in value.items()]))
    if isinstance(value, (list, tuple)):
        if not value:
            return tag("span", "none", class_="na")
        if all(isinstance(v, Mapping) for v in value):
            return _records_table([dict(v) for v in value])
        if all(not isinstance(v, (Mapping, list, tuple)) for v in value):
            return esc(", ".join(_text(v) for v in value))
        return tag("ul", [tag("li", _value(v)) for v in value])
    if isinstance(value, float):
        return esc(f"{value:.4g}")
    if not present(value):
        return tag("span", "–", class_="na")
    return esc(value)


def _by_domain(table: Mapping, domains: Iterable[str]) -> Html:
    """Priors per domain as one table with a row per domain, whichever way round the mapping is nested."""
    domains = set(domains)
    if not table or not all(isinstance(v, Mapping) for v in table.values()):
        return _value(table)
    if set(table) <= domains:  # {domain: {param: prior}}
        rows = {d: dict(v) for d, v in table.items()}
    elif {k for v in table.values() for k in v} <= domains:  # {param: {domain: prior}}
        rows = {}
        for param, per in table.items():
            for d, prior in per.items():
                rows.setdefault(d, {})[param] = prior
    else:
        return _value(table)
    params = list(dict.fromkeys(k for v in rows.values() for k in v))
    return _table(["Domain", *params], [[d, *[_text(v.get(k)) or "–" for k in params]] for d, v in rows.items()])


def _repo_relative(path: str) -> str:
    """A model file's path relative to the project folder when it lies there (the report must not depend on it)."""
    try:
        root = Path(__file__).resolve().parent.parent
        return str(Path(path).resolve().relative_to(root))
    except (ValueError, OSError):
        return path


def _records(table: Any) -> list[dict]:
    if hasattr(table, "to_dict"):
        return table.to_dict("records")
    return [dict(r) for r in table]


def _records_table(records: list[dict]) -> Html:
    columns: list[str] = []
    for r in records:
        columns.extend(k for k in r if k not in columns)

    def cell(v: Any) -> Any:
        if isinstance(v, float):
            return f"{v:.4g}" if math.isfinite(v) else "–"
        if isinstance(v, (Mapping, list, tuple)):
            return _value(v)
        return "–" if not present(v) else v

    numeric = [i for i, c in enumerate(columns) if all(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool)
                                                      for r in records if present(r.get(c)))]
    return _table([str(c) for c in columns], [[cell(r.get(c)) for c in columns] for r in records], numeric=numeric)


class _Report:
    """Builds the sections of one report; each method returns markup."""

    def __init__(self, evidence, summary: Mapping, extras: Mapping | None, steps: _Steps, dpi: int):
        self.evidence = evidence
        self.rows = _rows(evidence)
        self.summary = summary
        self.domains: dict[str, dict] = dict(summary.get("domains") or {})
        self.extras = dict(extras or {})
        self.steps = steps
        self.dpi = dpi
        self.engine = str(summary.get("engine") or "unknown")
        self.model = summary.get("model") or {}
        taken: set[str] = set()
        self.ids = {d: "domain-" + _slug(d, taken) for d in self.domains}
        self.project_names = {}
        for r in self.rows:
            pid = _text(r.get("project_id"))
            if pid:
                self.project_names.setdefault(pid, _text(r.get("project_name")) or pid)

    # -- helpers

    def project_name(self, pid: Any) -> str:
        return self.project_names.get(_text(pid), _text(pid))

    def domain_label(self, domain: Any) -> str:
        d = self.domains.get(str(domain))
        if d and d.get("label"):
            return str(d["label"])
        for r in self.rows:
            if str(r.get("domain")) == str(domain) and _text(r.get("domain_label")):
                return _text(r.get("domain_label"))
        return _text(domain)

    def domain_link(self, domain: Any) -> Html:
        anchor = self.ids.get(str(domain))
        label = self.domain_label(domain)
        return tag("a", label, href=f"#{anchor}") if anchor else esc(label)

    # -- sections

    def header(self) -> Html:
        n_projects = len({_text(r.get("project_id")) for r in self.rows if _text(r.get("project_id"))})
        engine = {"mcmc": "MCMC (PyMC)", "exact": "exact numerical integration"}.get(self.engine, self.engine)
        facts = [f"{_plural(len(self.rows), 'estimate')} from {_plural(n_projects, 'project')}",
                 f"{_plural(len(self.domains), 'outcome domain')} summarised",
                 f"engine: {engine}"]
        if self.model.get("name"):
            facts.append(f"model: {self.model['name']}")
        if self.summary.get("seed") is not None:
            facts.append(f"seed {self.summary['seed']}")
        return join([tag("h1", "What the evaluations say: a Bayesian evidence synthesis"),
                     tag("p", " · ".join(facts), class_="lede"), self.gate_banner()])

    def gate_banner(self) -> Html:
        diag = self.summary.get("diagnostics") or {}
        if self.engine == "exact":
            return tag("p", "Computed exactly (numerical integration, no sampling): there are no sampling diagnostics "
                            "to check.", class_="banner info")
        passed = diag.get("passed")
        if passed is False:
            return tag("p", "Warning: the sampler's diagnostics gate FAILED. The numbers below may be wrong; see ",
                       tag("a", "Diagnostics", href="#diagnostics"), " before relying on them.", class_="banner fail",
                       id="gate-failed")
        if passed is True:
            return tag("p", "The sampler's diagnostics passed the gate (R-hat, effective sample sizes, divergences; "
                            "see ", tag("a", "Diagnostics", href="#diagnostics"), ").", class_="banner pass")
        return tag("p", "No sampler diagnostics were recorded with this summary.", class_="banner info")

    def toc(self) -> Html:
        items = [("overview", "Overview")]
        items += [(self.ids[d], f"{self.domain_label(d)}") for d in self.domains]
        items += [("evidence", "The evidence"), ("excluded", "Estimates left out of pooling"),
                  ("direction-only", "Findings without numbers"), ("assumptions", "Stated assumptions"),
                  ("priors", "Priors and bias assumptions"), ("diagnostics", "Diagnostics")]
        items += [(key, title) for key, (title, _) in EXTRA_SECTIONS.items()]
        items += [(f"extra-{_slug(k, set())}", self._extra_title(k)) for k in self._other_extras()]
        items += [("reading", "How to read this report")]
        return tag("nav", tag("strong", "Contents"), tag("ol", [tag("li", tag("a", t, href=f"#{i}")) for i, t in items]),
                   class_="toc")

    def overview(self) -> Html:
        rows = []
        for d, dom in self.domains.items():
            mu, new = dom.get("mu") or {}, dom.get("theta_new") or {}
            metric = dom.get("metric")
            basis = evidence_basis(self.evidence, self.summary, d)
            words, css = verdict(mu.get("p_beneficial"))
            rows.append([
                self.domain_link(d),
                _UNIT_COMPACT.get(str(metric), metric_units(metric)),
                {"increase": "higher", "decrease": "lower"}.get(str(dom.get("beneficial")), "?"),
                (f"{fmt_num(mu.get('mean'), metric)} ({fmt_interval(mu.get('hdi_low'), mu.get('hdi_high'), metric)})"
                 if _num(mu.get("mean")) is not None else tag("span", "nothing pooled", class_="na")),
                fmt_prob(mu.get("p_beneficial")),
                tag("span", words, class_=f"verdict {css}"),
                fmt_interval(new.get("hdi_low"), new.get("hdi_high"), metric) if _num(new.get("mean")) is not None else "–",
                f"{dom.get('n_projects', '–')} / {dom.get('n_estimates', '–')}",
                (f"{basis['n_randomised']} of {basis['n_estimates']}" if basis["n_estimates"] else "–"),
            ])
        missing = self.unsummarised_domains()
        body = [tag("h2", "Overview", id="overview"),
                tag("p", "One row per outcome domain. Effects are in each domain's own units; intervals are posterior "
                         "credible intervals (", _pct_hdi(next((d.get("mu") for d in self.domains.values()), None)),
                    "), the predictive interval is where a new project of the same kind would land."),
                _table(["Domain", "Units", "Better is", "Pooled effect (interval)", "P(beneficial)", "Reading",
                        "New project (predictive)", "Projects / estimates", "Randomised estimates"],
                       rows, numeric=[3, 4, 6, 7, 8])]
        if missing:
            body.append(tag("p", "Domains in the evidence with no pooled result: ",
                            join([esc(f"{self.domain_label(d)} ({n} estimates)") for d, n in missing.items()], ", "),
                            ". Their estimates are in the evidence table with the reason each was left out.",
                            class_="na"))
        return tag("section", body)

    def unsummarised_domains(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.rows:
            d = _text(r.get("domain"))
            if d and d not in self.domains:
                counts[d] = counts.get(d, 0) + 1
        return counts

    def domain_section(self, domain: str) -> Html:
        from metaeval.plots import forest_rows

        dom = self.domains[domain]
        metric = dom.get("metric")
        mu = dom.get("mu") or {}
        words, css = verdict(mu.get("p_beneficial"))
        benefit = {"increase": "higher is better", "decrease": "lower is better"}.get(str(dom.get("beneficial")),
                                                                                     "direction of benefit not stated")
        parts = [tag("h3", self.domain_label(domain), " ", tag("small", f"({metric_units(metric)}; {benefit})")),
                 tag("span", words, class_=f"verdict {css}"),
                 tag("ul", [tag("li", s) for s in domain_sentences(self.evidence, self.summary, domain)],
                     class_="sentences")]
        notes, n_left_out = domain_notes(self.summary, domain)
        if n_left_out:
            notes.append(f"{_plural(n_left_out, 'estimate')} of this domain left out of this fit: see ")
        if notes:
            items = [tag("li", n) for n in notes]
            if n_left_out:
                items[-1] = tag("li", notes[-1], tag("a", "Estimates left out of pooling", href="#excluded"), ".")
            parts.append(tag("div", tag("strong", "Notes from the fit"), tag("ul", items), class_="notes"))
        plotted = [r for r in forest_rows(self.evidence, self.summary, domain)
                   if r["kind"] == "direction" or r.get("x") is not None or r.get("raw_x") is not None]
        if plotted:
            parts.append(self.forest_figure(domain))
        else:
            parts.append(_na("No forest plot: this domain has no estimate with a number or a direction to show."))
        projects = dom.get("projects") or {}
        if projects:
            rows = []
            for key, p in projects.items():
                rows.append([self.project_name(key) if key in self.project_names else key,
                             fmt_num(p.get("raw"), metric), fmt_num(p.get("raw_se"), metric),
                             fmt_num(p.get("mean"), metric), fmt_interval(p.get("hdi_low"), p.get("hdi_high"), metric),
                             fmt_prob(p.get("pooling")) if _num(p.get("pooling")) is not None else "–",
                             fmt_prob((dom.get("rank_first") or {}).get(key))
                             if (dom.get("rank_first") or {}).get(key) is not None else "–"])
            header = ["Project or estimate", "Raw", "Raw SE", "Shrunken", f"{_pct_hdi(mu)} interval", "Pooling",
                      "P(best)"]
            if any(isinstance(p.get("bias"), Mapping) for p in projects.values()):
                header.append("Design bias (mean ± SD)")
                for row, p in zip(rows, projects.values()):
                    b = p.get("bias") if isinstance(p.get("bias"), Mapping) else {}
                    row.append(f"{fmt_num(b.get('mean'), metric)} ± {fmt_num(b.get('sd'), metric)}" if b else "none")
            parts.append(tag("details", tag("summary", "Project effects: raw and shrunken"),
                             _table(header, rows, numeric=range(1, len(header)))))
        tau = dom.get("tau") or {}
        if _num(tau.get("mean")) is not None:
            parts.append(tag("p", f"Between-project spread τ: {_with_unit(fmt_num(tau.get('mean'), metric), metric)} "
                                  f"({_pct_hdi(tau)} interval {fmt_interval(tau.get('hdi_low'), tau.get('hdi_high'), metric)}).",
                             class_="muted"))
        return tag("section", parts, id=self.ids[domain], class_="domain")

    def forest_figure(self, domain: str) -> Html:
        """The domain's forest plot as an embedded figure (or a note saying why it is missing)."""
        from metaeval.plots import forest_plot

        mu = self.domains[domain].get("mu") or {}
        try:
            fig = forest_plot(self.evidence, self.summary, domain)
            image = _img(_figure_data(fig, self.dpi), f"Forest plot for {self.domain_label(domain)}", dpi=self.dpi)
        except Exception as err:  # noqa: BLE001 - one bad figure must not lose the whole report
            return _na(f"The forest plot could not be drawn: {err}")
        return tag("figure", image, tag(
            "figcaption",
            "Per project: the raw estimate with its 95% confidence interval (hollow marker) and the shrunken "
            f"project effect with its {_pct_hdi(mu)} credible interval (filled marker), coloured and shaped by "
            "design. Bottom: the pooled effect μ (diamond) and the predictive interval for a new project "
            "(dashed). Faded rows did not enter this model."))

    def evidence_section(self) -> Html:
        projects: dict[str, dict] = {}
        for r in self.rows:
            pid = _text(r.get("project_id")) or _text(r.get("estimate_id"))
            p = projects.setdefault(pid, {"row": r, "n": 0, "pooled": 0})
            p["n"] += 1
            p["pooled"] += int(bool(flag(r.get("poolable"))) and _num(r.get("yi")) is not None)
        ladder = [d for d in DESIGN_ORDER if d != "unspecified"]
        project_rows = []
        for pid, p in sorted(projects.items(), key=lambda kv: (_rank(_text(kv[1]["row"].get("design"))), kv[0])):
            r = p["row"]
            design = _text(r.get("design")) or "unspecified"
            grade = f"{ladder.index(design) + 1} of {len(ladder)}" if design in ladder else "–"
            words = [_text(r.get(k)).replace("_", " ") for k in ("evaluator", "status")]
            project_rows.append([
                join([tag("strong", self.project_name(pid)), tag("br"), tag("code", pid)]),
                join([design_label(design), tag("br"), tag("span", f"grade {grade}", class_="muted")]),
                ", ".join(w for w in words if w) or "–",
                _text(r.get("outcome_source")).replace("_", " ") or "–", _text(r.get("risk_of_bias")) or "–",
                tag("span", _text(r.get("source")) or "–", class_="file"),
                f"{p['pooled']} of {p['n']}",
            ])
        groups: dict[str, list[dict]] = {}
        for r in sorted(self.rows, key=lambda r: (_rank(_text(r.get("design"))), _text(r.get("project_id")),
                                                  _text(r.get("estimate_id")))):
            groups.setdefault(_text(r.get("project_id")) or _text(r.get("estimate_id")), []).append(r)
        header = ["Estimate", "Reported", "Harmonised", "Pooled", "Provenance", "Assumptions and notes"]
        bodies = []
        for pid, rows in groups.items():
            design = design_label(_text(rows[0].get("design")) or "unspecified")
            bodies.append(tag("tbody", tag("tr", tag("th", tag("strong", self.project_name(pid)), " · ", design,
                                                     colspan=len(header), scope="rowgroup"), class_="group"),
                              [tag("tr", [tag("td", c) for c in self._estimate_row(r)]) for r in rows]))
        widths = ["22%", "15%", "14%", "16%", "18%", "15%"]
        colgroup = tag("colgroup", [tag("col", style=f"width: {w}") for w in widths])
        estimates = tag("div", tag("table", colgroup, tag("thead", tag("tr", [tag("th", h, scope="col") for h in header])),
                                   bodies, class_="wide", id="estimates"), class_="scroll")
        return tag("section", [
            tag("h2", "The evidence", id="evidence"),
            tag("p", "Projects, strongest design first. Design grade: place on the design ladder (1 = randomised trial). "
                     "Risk of bias: the worst of the project's judgements on confounding, selection, attrition, "
                     "measurement and reporting."),
            _table(["Project", "Design", "Evaluator, status", "Outcome data", "Risk of bias", "Source",
                    "Pooled estimates"], project_rows, numeric=[6], class_="projects"),
            tag("h3", "Every estimate"),
            tag("p", "As reported, as harmonised to the domain's metric, whether it was pooled, where it comes from, and "
                     "every assumption made for it."),
            estimates,
        ])

    def _estimate_row(self, r: dict) -> list[Any]:
        metric = r.get("metric")
        reported = []
        if _num(r.get("estimate")) is not None:
            text = f"{fmt_num(r.get('estimate'), None)} {_text(metric)}"
            if _num(r.get("ci_low")) is not None and _num(r.get("ci_high")) is not None:
                level = _num(r.get("ci_level")) or 0.95
                text += f" [{100 * level:g}% CI {fmt_interval(r.get('ci_low'), r.get('ci_high'), None)}]"
            elif _num(r.get("se")) is not None:
                text += f" (SE {fmt_num(r.get('se'), None)})"
            reported.append(text)
        if _num(r.get("mean_treatment")) is not None or _num(r.get("mean_control")) is not None:
            text = f"group means {fmt_num(r.get('mean_treatment'), None)} vs {fmt_num(r.get('mean_control'), None)}"
            if _num(r.get("sd_treatment")) is not None or _num(r.get("sd_control")) is not None:
                text += f" (SD {fmt_num(r.get('sd_treatment'), None)} vs {fmt_num(r.get('sd_control'), None)})"
            reported.append(text)
        if _num(r.get("target")) is not None:
            reported.append(f"target {fmt_num(r.get('target'), None)}")
        if _num(r.get("p_value")) is not None:
            reported.append(f"p = {fmt_num(r.get('p_value'), None)}")
        if _text(r.get("direction")):
            sig = {True: "significant", False: "not significant"}.get(
                flag(r.get("significant")), "significance not stated")
            reported.append(f"direction: {_text(r.get('direction'))}, {sig}")
        n_t, n_c = _num(r.get("n_treatment")), _num(r.get("n_control"))
        if n_t is not None or n_c is not None:
            reported.append(f"n = {fmt_num(n_t, 'hours')} vs {fmt_num(n_c, 'hours')}")
        dmetric = r.get("domain_metric")
        if _num(r.get("yi")) is not None:
            harmonised = [f"{fmt_num(r.get('yi'), dmetric)} ± {fmt_num(r.get('sei'), dmetric)} {_text(dmetric)}"]
        else:
            harmonised = ["–"]
        if _text(r.get("harmonisation")):
            harmonised.append(tag("span", _text(r.get("harmonisation")), class_="muted"))
        if flag(r.get("direction_only")):
            pooled = "direction only"
        elif flag(r.get("poolable")) and _num(r.get("yi")) is not None:
            pooled = "yes"
        else:
            pooled = join(["no: ", _text(r.get("exclusion_reason")) or "no usable effect size"])
        provenance = [x for x in (_text(r.get("source")), _text(r.get("location"))) if x]
        prov = [esc(" · ".join(provenance))]
        if _text(r.get("quote")):
            prov += [tag("br"), tag("q", _text(r.get("quote")))]
        notes = []
        if _text(r.get("assumptions")):
            notes.append(tag("div", tag("strong", "Assumed: "), _text(r.get("assumptions"))))
        if _text(r.get("notes")):
            notes.append(tag("div", _text(r.get("notes"))))
        outcome = [esc(_text(r.get("outcome")) or "–")]
        if _text(r.get("outcome_da")):
            outcome += [" ", tag("span", f"({_text(r.get('outcome_da'))})", class_="muted", lang="da")]
        estimand = _text(r.get("estimand"))
        first = [tag("code", _text(r.get("estimate_id"))), tag("br"), tag("strong", join(outcome)), tag("br"),
                 self.domain_link(r.get("domain")), f" · {estimand}" if estimand else ""]
        return [join(first), join(reported, "; ") if reported else "–", join(harmonised, tag("br")), pooled,
                join(prov), join(notes) if notes else "–"]

    def excluded_section(self) -> Html:
        rows: list[list[Any]] = []
        seen: set[str] = set()
        for r in self.rows:
            if flag(r.get("direction_only")):
                continue
            if not flag(r.get("poolable")) or _num(r.get("yi")) is None or _num(r.get("sei")) is None:
                eid = _text(r.get("estimate_id"))
                seen.add(eid)
                rows.append([tag("code", eid), self.project_name(r.get("project_id")), self.domain_link(r.get("domain")),
                             _text(r.get("exclusion_reason")) or "no usable effect size and standard error",
                             "evidence"])
        for d, x in self.model_exclusions():
            eid = _text(x.get("estimate_id"))
            if eid in seen:
                continue
            seen.add(eid)
            rows.append([tag("code", eid), self.project_name(x.get("project_id") or x.get("project")),
                         self.domain_link(d), _text(x.get("reason")) or "–", "model"])
        for d, dom in self.domains.items():
            projects_in = {str(p) for p in dom.get("projects_in") or []}
            if not projects_in:
                continue
            for r in _pooled_rows([r for r in self.rows if str(r.get("domain")) == d]):
                eid = _text(r.get("estimate_id"))
                if str(r.get("project_id")) not in projects_in and eid not in seen:
                    seen.add(eid)
                    rows.append([tag("code", eid), self.project_name(r.get("project_id")), self.domain_link(d),
                                 "not in this model's fit (its design or project is outside this model variant)",
                                 "model"])
        for d, n in self.unsummarised_domains().items():
            rows.append(["–", "–", self.domain_label(d), f"domain not in the fit summary ({_plural(n, 'estimate')})",
                         "model"])
        body = [tag("h2", "Estimates left out of pooling", id="excluded")]
        if rows:
            body += [tag("p", "Each estimate that did not enter the pooled effect, with the reason. 'evidence': "
                              "decided when the evidence was harmonised; 'model': left out by this fit."),
                     _table(["Estimate", "Project", "Domain", "Reason", "Left out by"], rows)]
        else:
            body.append(_na("Every estimate entered the pooled effects."))
        return tag("section", body)

    def model_exclusions(self) -> list[tuple[str, dict]]:
        """(domain, entry) for each estimate the fit left out: per domain (exact engine) or in one list (MCMC)."""
        out = [(d, x) for d, dom in self.domains.items() for x in dom.get("excluded") or [] if isinstance(x, Mapping)]
        out += [(_text(x.get("domain")), x) for x in self.summary.get("excluded") or [] if isinstance(x, Mapping)]
        return out

    def direction_section(self) -> Html:
        mode = (self.model.get("direction_only") or {}).get("mode") if isinstance(self.model.get("direction_only"), Mapping) \
            else self.model.get("direction_only")
        rows = []
        for r in self.rows:
            if not flag(r.get("direction_only")):
                continue
            d = _text(r.get("domain"))
            dom = self.domains.get(d) or {}
            mu = dom.get("mu") or {}
            metric = dom.get("metric")
            eid = _text(r.get("estimate_id"))
            direction = _text(r.get("direction"))
            sig = {True: "significant", False: "not significant"}.get(
                flag(r.get("significant")), "significance not stated")
            excluded_ids = {_text(x.get("estimate_id")) for _, x in self.model_exclusions()}
            if not dom:
                used = "no: the domain was not fitted"
            elif eid in excluded_ids or mode == "exclude":
                used = "no: shown beside it only"
            elif mode == "censored":
                used = "yes (censored likelihood)"
            else:
                used = "not recorded"
            p_ben = _num(mu.get("p_beneficial"))
            benefit = dom.get("beneficial") or r.get("domain_beneficial")
            if p_ben is None or direction not in ("increase", "decrease"):
                agree, p_same = "cannot tell", "–"
            else:
                p = p_ben if direction == benefit else 1 - p_ben
                p_same = fmt_prob(p)
                agree = "agrees" if p >= 0.8 else "disagrees" if p <= 0.2 else "inconclusive"
            project = (dom.get("projects") or {}).get(_text(r.get("project_id"))) or {}
            project_text = (f"{fmt_num(project.get('mean'), metric)} ({fmt_interval(project.get('hdi_low'), project.get('hdi_high'), metric)})"
                            if _num(project.get("mean")) is not None else "–")
            finding = [tag("strong", _text(r.get("outcome")) or "–"), tag("br"),
                       tag("span", self.project_name(r.get("project_id")), class_="muted"), tag("br"), tag("code", eid)]
            rows.append([join(finding), self.domain_link(d), f"{direction or 'no direction'}, {sig}", used,
                         (f"{fmt_num(mu.get('mean'), metric)} ({fmt_interval(mu.get('hdi_low'), mu.get('hdi_high'), metric)})"
                          if _num(mu.get("mean")) is not None else "–"),
                         project_text, p_same, tag("strong", agree)])
        body = [tag("h2", "Findings without numbers", id="direction-only")]
        if rows:
            body += [tag("p", "Findings reported only as a direction and whether it was significant, beside the "
                              "posterior of their domain. 'P(same direction)' is the posterior probability that the "
                              "pooled effect points the way the finding does; it agrees at 80% or more and disagrees at "
                              "20% or less."),
                     _table(["Finding", "Domain", "Reported", "In the model?", "Pooled effect",
                             "Project's shrunken effect", "P(same direction)", "Verdict"], rows, numeric=[4, 5, 6])]
        else:
            body.append(_na("No finding in this evidence base is reported only as a direction."))
        return tag("section", body)

    def assumptions_section(self) -> Html:
        rows = [[tag("code", _text(r.get("estimate_id"))), self.project_name(r.get("project_id")),
                 self.domain_link(r.get("domain")), _text(r.get("assumptions"))]
                for r in self.rows if _text(r.get("assumptions"))]
        domain_rows = {}
        for r in self.rows:
            d = _text(r.get("domain"))
            if d and d not in domain_rows:
                domain_rows[d] = [self.domain_link(d), _text(r.get("domain_metric")) or "–",
                                  {"increase": "higher", "decrease": "lower"}.get(_text(r.get("domain_beneficial")), "–"),
                                  fmt_num(r.get("domain_mid"), r.get("domain_metric")),
                                  fmt_num(r.get("domain_scale"), r.get("domain_metric"))]
        body = [tag("h2", "Stated assumptions", id="assumptions"),
                tag("p", "Values the sources do not give, supplied by the curators with a reason (every one is listed):")]
        body.append(_table(["Estimate", "Project", "Domain", "Assumption (value and reason)"], rows) if rows
                    else _na("No estimate rests on an assumed value."))
        if domain_rows:
            body += [tag("p", "Analyst judgements per domain: the minimal important difference (MID) and the size of a "
                              "large effect (scale, which sets the default priors). Their rationales are in the domains "
                              "file."),
                     _table(["Domain", "Metric", "Better is", "MID", "Scale"], domain_rows.values(), numeric=[3, 4])]
        return tag("section", body)

    def priors_section(self) -> Html:
        model = dict(self.model)
        body = [tag("h2", "Priors and bias assumptions", id="priors")]
        if not model:
            body.append(_na("The summary does not record the model's priors."))
            return tag("section", body)
        intro = [x for x in (model.pop("name", None), model.pop("description", None)) if x]
        if intro:
            body.append(tag("p", tag("strong", _text(intro[0])), (": " + _text(intro[1])) if len(intro) > 1 else ""))
        for key in ("source", "units"):
            if model.get(key):
                text = _text(model.pop(key))
                body.append(tag("p", tag("span", f"{key.capitalize()}: ", class_="muted"),
                                _repo_relative(text) if key == "source" else text))
        priors = model.pop("priors", None)
        if priors:
            body += [tag("h3", "Priors"), _table(["Parameter", "Prior"], [[tag("code", k), tag("code", _text(v))]
                                                                          for k, v in priors.items()])]
        for key in ("per_domain_priors", "domain_priors"):
            table = model.pop(key, None)
            if isinstance(table, Mapping) and table:
                body += [tag("h3", "Priors per domain, in each domain's own units"), _by_domain(table, self.domains)]
        bias = model.pop("bias", None)
        if isinstance(bias, Mapping):
            bias = dict(bias)
            body.append(tag("h3", "Design-bias assumptions"))
            body.append(tag("p", "Mode: ", tag("strong", _text(bias.pop("mode", "–"))),
                            ". A positive bias mean says the design tends to make an initiative look better than it "
                            "is; randomised trials carry no bias term."))
            designs = bias.pop("designs", None) or {}
            if designs:
                body.append(_table(["Design", "Bias prior"], [[design_label(d), tag("code", _text(v))] for d, v in
                                                              sorted(designs.items(), key=lambda kv: _rank(kv[0]))]))
            rest = {k: v for k, v in bias.items() if v not in (None, {}, [])}
            if rest:
                body.append(_value(rest))
        elif bias is not None:
            body += [tag("h3", "Design-bias assumptions"), _value(bias)]
        terms = model.pop("bias_terms", None)
        if terms:
            body += [tag("h3", "Bias terms in this fit"), _value(terms)]
        if model:
            body += [tag("h3", "Other settings"), _value(model)]
        return tag("section", body)

    def diagnostics_section(self) -> Html:
        diag = dict(self.summary.get("diagnostics") or {})
        body = [tag("h2", "Diagnostics", id="diagnostics")]
        if self.engine == "exact":
            body.append(tag("p", "The exact engine integrates the posterior numerically; there is no sampling and so "
                                 "no R-hat, effective sample size or divergences."))
        values = {k: diag.pop(k) for k in list(GATE) if k in diag}
        limits = {k: text for k, (_, text) in GATE.items()}
        thresholds = diag.pop("thresholds", None)
        if isinstance(thresholds, Mapping):  # the gate the fit was judged by, not the defaults
            if _num(thresholds.get("rhat_max")) is not None:
                limits["rhat_max"] = f"≤ {thresholds['rhat_max']:g}"
            if _num(thresholds.get("ess_min")) is not None:
                limits["ess_bulk_min"] = limits["ess_tail_min"] = f"≥ {thresholds['ess_min']:g}"
            if _num(thresholds.get("divergences")) is not None:
                limits["divergences"] = "0" if thresholds["divergences"] == 0 else f"≤ {thresholds['divergences']:g}"
        if any(present(v) for v in values.values()):
            rows = [[GATE[k][0], _value(v), limits[k]] for k, v in values.items()]
            body.append(_table(["Check", "Value", "Gate"], rows, numeric=[1]))
        passed = diag.pop("passed", None)
        failures = diag.pop("failures", None)
        if passed is not None and self.engine != "exact":
            body.append(tag("p", "Gate: ", tag("strong", "passed" if passed else "FAILED"),
                            (": " + "; ".join(map(str, failures))) if failures else ""))
        if diag:
            body.append(_value(diag))
        if len(body) == 1:
            body.append(_na("No diagnostics were recorded."))
        return tag("section", body)

    def _other_extras(self) -> list[str]:
        return sorted(k for k in self.extras if k not in EXTRA_SECTIONS)

    def _extra_title(self, key: str) -> str:
        value = self.extras.get(key)
        if isinstance(value, Mapping) and value.get("title"):
            return str(value["title"])
        return EXTRA_SECTIONS.get(key, (key.replace("_", " ").capitalize(), ""))[0]

    def extra_section(self, key: str) -> Html:
        anchor = key if key in EXTRA_SECTIONS else f"extra-{_slug(key, set())}"
        body = [tag("h2", self._extra_title(key), id=anchor)]
        value = self.extras.get(key)
        if value is None:
            body.append(_na(EXTRA_SECTIONS[key][1] if key in EXTRA_SECTIONS else "Not available."))
            return tag("section", body)
        if isinstance(value, str):
            body.append(tag("p", value))
            return tag("section", body)
        if not isinstance(value, Mapping):
            value = {"table": value} if hasattr(value, "to_dict") or isinstance(value, list) else {"figures": [value]}
        text = value.get("text")
        for paragraph in ([text] if isinstance(text, str) else text or []):
            body.append(tag("p", paragraph))
        if value.get("table") is not None:
            body.append(_records_table(_records(value["table"])))
        figures = value.get("figures") or ([value["figure"]] if value.get("figure") is not None else [])
        if isinstance(figures, Mapping):
            figures = [{"caption": k, "figure": v} for k, v in figures.items()]
        for i, item in enumerate(figures):
            fig, caption = (item.get("figure"), item.get("caption")) if isinstance(item, Mapping) else (item, None)
            try:
                image = _img(_figure_data(fig, self.dpi), caption or f"{self._extra_title(key)}, figure {i + 1}", dpi=self.dpi)
                body.append(tag("figure", image, tag("figcaption", caption) if caption else ""))
            except Exception as err:  # noqa: BLE001
                body.append(_na(f"A figure could not be embedded: {err}"))
        if len(body) == 1:
            body.append(_na("This section was supplied empty."))
        return tag("section", body)

    def reading(self) -> Html:
        hdi = _pct_hdi(next((d.get("mu") for d in self.domains.values()), None))
        return tag("section", [
            tag("h2", "How to read this report", id="reading"),
            tag("ul", [
                tag("li", "Pooled effect (μ): the average effect of initiatives of this kind, from a hierarchical model "
                          "that lets projects differ and, in the bias-adjusted model, discounts weaker designs."),
                tag("li", f"Credible interval ({hdi}): the range the effect lies in with {hdi} posterior probability, "
                          "given the model and its priors (highest-density interval unless the model block says "
                          "otherwise)."),
                tag("li", "P(beneficial): the posterior probability that the pooled effect points in the domain's "
                          "beneficial direction. It is not a p-value."),
                tag("li", "Predictive interval: where the effect of a new project of the same kind would fall. It is "
                          "wider than the pooled interval because projects differ (τ)."),
                tag("li", "Shrinkage: a project's shrunken effect is pulled from its raw estimate towards the pooled "
                          "effect, more so the noisier the estimate ('pooling' near 100%)."),
            ]),
        ])

    def footer(self) -> Html:
        from metaeval import __version__

        return tag("footer", f"Made by metaeval {__version__} from the evidence table and the fit summary "
                             f"(engine {self.engine}). Self-contained: no part of this page is loaded from elsewhere.")


def render_report(
    evidence,
    summary: Mapping,
    *,
    extras: Mapping | None = None,
    title: str = "metaeval report",
    progress: Callable[[str, int, int], None] | None = None,
    dpi: int = 110,
) -> str:
    """The report as one self-contained HTML page.

    ``evidence`` is the harmonised table (``metaeval.load_evidence``); ``summary`` the
    engines' summary dict (domains, diagnostics, model, seed). ``extras`` may hold
    ``comparison``, ``sensitivity`` and ``calibration`` (each a dict with optional
    ``title``, ``text``, ``table`` (DataFrame or records) and ``figures`` (matplotlib
    Figures, PNG bytes or SVG text, bare or as ``{"caption", "figure"}``), or plain text);
    a missing one is reported as not available. Other keys become further sections.
    ``progress(description, done, total)`` is called as each part is built.
    Same inputs, same text: nothing depends on the clock.
    """
    if "domains" not in summary:
        raise ValueError("the summary has no 'domains': pass the dict the fit engines produce")
    others = [k for k in (extras or {}) if k not in EXTRA_SECTIONS]
    steps = _Steps(progress, total=1 + len(summary["domains"]) + 6 + len(EXTRA_SECTIONS) + len(others))
    rep = _Report(evidence, summary, extras, steps, dpi)
    body: list[Html] = [rep.header(), rep.toc(), rep.overview()]
    steps("overview")
    body.append(tag("h2", "Results by outcome domain", id="domains"))
    for domain in rep.domains:
        body.append(rep.domain_section(domain))
        steps(f"domain {rep.domain_label(domain)}")
    for name, build in (("evidence table", rep.evidence_section), ("left-out estimates", rep.excluded_section),
                        ("direction-only findings", rep.direction_section), ("assumptions", rep.assumptions_section),
                        ("priors", rep.priors_section), ("diagnostics", rep.diagnostics_section)):
        body.append(build())
        steps(name)
    for key in [*EXTRA_SECTIONS, *rep._other_extras()]:
        body.append(rep.extra_section(key))
        steps(rep._extra_title(key))
    body += [rep.reading(), rep.footer()]
    head = join([
        Html('<meta charset="utf-8">'),
        tag("meta", http_equiv="Content-Security-Policy", content=_CSP),
        tag("meta", name="viewport", content="width=device-width, initial-scale=1"),
        tag("meta", name="generator", content="metaeval"),
        tag("title", title),
        tag("style", Html(_CSS)),
    ])
    return "<!DOCTYPE html>\n" + tag("html", tag("head", head), tag("body", tag("main", body)), lang="en") + "\n"


def write_report(
    path: str | Path,
    evidence,
    summary: Mapping,
    *,
    extras: Mapping | None = None,
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

            text = render_report(evidence, summary, extras=extras, title=title, progress=advance)
    else:
        text = render_report(evidence, summary, extras=extras, title=title)
    write_atomic(path, text)
    return path
