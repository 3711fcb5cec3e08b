"""The report's figures as SVG drawn from view data: a domain's forest plot and the line charts of the
initiative sections (acceptability curves, planning curves).

This module computes each figure's geometry (scales, ticks, row positions, marker outlines) as a flat list of
marks of three kinds (``line``, ``path``, ``text``), and ``templates/chart.svg`` draws them (Jinja2, autoescaped).
No matplotlib: the bundled report's thirteen figures took 1.9 s of its 3.9 with matplotlib (0.1-0.2 s a figure,
mostly text layout); here they take milliseconds, and their text is text (the browser's search finds it, and
it is sharp at any zoom). The figures keep the look of :mod:`metaeval.plots` (its colours, markers and rows),
which still draws `metaeval plot`'s PNG, SVG and PDF files. Numbers are rounded to 0.01 px, so the same inputs
give the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache

from metaeval.cells import finite
from metaeval.files import safe_name
from metaeval.plots import DESIGN_STYLE, direction_text, forest_rows
from metaeval.words import design_label, design_rank, metric_units, number, shortened

#: arviz-plots' ``arviz-variat`` colour cycle (its matplotlib style), for series without a colour of their own.
CYCLE = ("#36acc6", "#f66d7f", "#fac364", "#7c2695", "#228306", "#a252f4", "#63f0ea", "#a77e4f")
INK, MUTED, FAINT = "#262626", "#555555", "#bbbbbb"
FONT = 12
#: Width of a character in ems, a little above system-ui's average, to reserve room for text the browser lays
#: out (the browser test checks that no label of the bundled or a hostile evidence base leaves the figure).
CHAR_EM = 0.64
WIDTH = 820
ROW = 26
MAX_LABEL = 42
#: Forest rows: a raw estimate sits this far above, the shrunken effect below, the row's centre when it has both.
PAIR_OFFSET = 5.0


def text_width(text: str, size: float = FONT) -> float:
    """The width reserved for ``text`` at font size ``size`` (px)."""
    return len(text) * CHAR_EM * size


def r2(x: float) -> float:
    """A coordinate rounded to 0.01 px: the same inputs give the same bytes, and files stay small."""
    return round(float(x), 2) + 0.0  # + 0.0: no "-0.0"


# ---------------------------------------------------------------------------- scales and ticks


@dataclass(frozen=True)
class Scale:
    """Data values [lo, hi] onto pixels [start, end] (end < start for a y axis), linear or logarithmic."""

    lo: float
    hi: float
    start: float
    end: float
    log: bool = False

    def __call__(self, value: float) -> float:
        f = math.log if self.log else float
        span = f(self.hi) - f(self.lo)
        t = (f(value) - f(self.lo)) / span if span else 0.5
        return r2(self.start + t * (self.end - self.start))


def nice_ticks(lo: float, hi: float, most: int = 7) -> tuple[list[float], float]:
    """At most ``most`` ticks at multiples of a round step (1, 2, 2.5 or 5 times a power of ten) within [lo, hi]."""
    span = hi - lo
    if not span > 0:
        span = abs(lo) or 1.0
        lo, hi = lo - span / 2, hi + span / 2
    raw = span / max(most - 1, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw * (1 - 1e-9))
    first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
    return [k * step for k in range(first, last + 1)], step


def tick_text(value: float, step: float) -> str:
    """A tick's label with the decimals its step needs and a true minus sign."""
    power = math.floor(math.log10(step) + 1e-9)
    decimals = max(0, -power + (round(step / 10.0**power, 6) == 2.5))
    text = f"{value:,.{decimals}f}"
    return ("0" if float(text.replace(",", "")) == 0 else text).replace("-", "−")


def padded(values: Sequence[float], share: float = 0.05) -> tuple[float, float]:
    """The range of ``values`` widened by ``share`` of its span each side (a unit span when it has none)."""
    lo, hi = min(values), max(values)
    pad = share * ((hi - lo) or max(abs(lo), 1.0))
    return lo - pad, hi + pad


# ---------------------------------------------------------------------------- marks


def line(x1, y1, x2, y2, colour=INK, width=1.0, dash: str | None = None, opacity=1.0, cls: str | None = None) -> dict:
    return {"kind": "line", "x1": r2(x1), "y1": r2(y1), "x2": r2(x2), "y2": r2(y2), "stroke": colour, "width": width,
            "dash": dash, "opacity": opacity, "cls": cls}


def path(d: str, fill="none", stroke: str | None = None, width=1.0, opacity=1.0, cls: str | None = None, tip: str | None = None,
         dash: str | None = None) -> dict:
    return {"kind": "path", "d": d, "fill": fill, "stroke": stroke, "width": width, "opacity": opacity, "cls": cls, "tip": tip,
            "dash": dash, "transform": None}


def text(x, y, value: str, anchor="start", size=FONT, colour=INK, weight="normal", style="normal", opacity=1.0,
         rotate: bool = False, cls: str | None = None, baseline="middle") -> dict:
    return {"kind": "text", "x": r2(x), "y": r2(y), "text": value, "anchor": anchor, "size": size, "fill": colour, "weight": weight,
            "style": style, "opacity": opacity, "rotate": rotate, "cls": cls, "baseline": baseline, "tip": None}


def outline(points: Sequence[tuple[float, float]]) -> str:
    """A closed SVG path through ``points``."""
    return "M" + " L".join(f"{r2(x)},{r2(y)}" for x, y in points) + " Z"


def polyline(points: Sequence[tuple[float, float]]) -> str:
    return "M" + " L".join(f"{r2(x)},{r2(y)}" for x, y in points)


@cache
def _shape(marker: str) -> tuple[tuple[float, float], ...]:
    """matplotlib's filled markers as polygons of unit size (a circle as a 24-gon)."""
    if marker == "s":
        return ((-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8))
    if marker == "D":
        return ((0, -1), (0.8, 0), (0, 1), (-0.8, 0))
    if marker in "^v>":
        tri = ((0, -1), (0.87, 0.55), (-0.87, 0.55))
        if marker == "v":
            return tuple((x, -y) for x, y in tri)
        return tri if marker == "^" else tuple((-y, x) for x, y in tri)
    if marker in "PX":
        a, b = 1.0, 0.34
        plus = ((-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b))
        if marker == "P":
            return plus
        c = math.sqrt(0.5)
        return tuple((c * (x - y), c * (x + y)) for x, y in plus)
    return tuple((math.cos(2 * math.pi * k / 24), math.sin(2 * math.pi * k / 24)) for k in range(24))


def marker(x: float, y: float, shape: str, size: float, colour: str, filled=True, opacity=1.0, cls: str | None = None,
           tip: str | None = None) -> dict:
    """A marker of ``size`` px across: filled with a white rim, or hollow (white inside, coloured rim)."""
    d = outline([(x + size / 2 * px, y + size / 2 * py) for px, py in _shape(shape)])
    if filled:
        return path(d, fill=colour, stroke="#ffffff", width=0.8, opacity=opacity, cls=cls, tip=tip)
    return path(d, fill="#ffffff", stroke=colour, width=1.4, opacity=opacity, cls=cls, tip=tip)


def arrow(x0: float, x1: float, y: float, colour: str, opacity=1.0) -> list[dict]:
    """A horizontal arrow from x0 to x1 with a filled head."""
    head = 7.0 if x1 >= x0 else -7.0
    return [line(x0, y, x1 - head, y, colour, 1.4, opacity=opacity, cls="direction"),
            path(outline([(x1, y), (x1 - head, y - 3.5), (x1 - head, y + 3.5)]), fill=colour, opacity=opacity, cls="direction")]


def legend(items: list[tuple[list[dict], str]], top: float, left: float, width: float, columns: int = 3) -> tuple[list[dict], float]:
    """Legend entries (a glyph's marks drawn around (0, 0), a label) in at most ``columns`` columns (fewer where
    the labels are too long for them) from ``top``; returns the marks and the y below them."""
    marks: list[dict] = []
    longest = max((text_width(label, FONT - 1) for _, label in items), default=0.0) + 44
    columns = max(1, min(columns, int(width // longest)))
    column = width / columns
    for i, (glyph, label) in enumerate(items):
        gx, gy = left + (i % columns) * column + 14, top + (i // columns) * 20 + 8
        marks.extend(_moved(m, gx, gy) for m in glyph)
        marks.append(text(gx + 18, gy, label, size=FONT - 1))
    rows = math.ceil(len(items) / columns)
    return marks, top + rows * 20


def _moved(mark: dict, dx: float, dy: float) -> dict:
    """A glyph's mark, drawn around (0, 0), moved to (dx, dy)."""
    if mark["kind"] == "line":
        return {**mark, "x1": r2(mark["x1"] + dx), "x2": r2(mark["x2"] + dx), "y1": r2(mark["y1"] + dy), "y2": r2(mark["y2"] + dy)}
    if mark["kind"] == "path":
        return {**mark, "transform": f"translate({r2(dx)},{r2(dy)})"}
    return {**mark, "x": r2(mark["x"] + dx), "y": r2(mark["y"] + dy)}


def x_axis(scale: Scale, y: float, ticks: Sequence[float], labels: Sequence[str]) -> list[dict]:
    """The axis line at ``y`` with ticks below it."""
    marks = [line(scale.start, y, scale.end, y, "#545454", 0.8)]
    for value, label in zip(ticks, labels):
        x = scale(value)
        marks += [line(x, y, x, y + 5, "#545454", 0.8), text(x, y + 16, label, anchor="middle", size=FONT - 1)]
    return marks


def y_axis(scale: Scale, x: float, ticks: Sequence[float], labels: Sequence[str]) -> list[dict]:
    """The axis line at ``x`` with ticks left of it."""
    marks = [line(x, scale.start, x, scale.end, "#545454", 0.8)]
    for value, label in zip(ticks, labels):
        y = scale(value)
        marks += [line(x - 5, y, x, y, "#545454", 0.8), text(x - 8, y, label, anchor="end", size=FONT - 1)]
    return marks


# ---------------------------------------------------------------------------- the forest plot


def forest_chart(evidence, result, domain: str, max_rows: int | None = None) -> dict | None:
    """A domain's forest plot (:func:`metaeval.plots.forest_plot`'s rows and look) as view data for ``chart.svg``;
    None when no row has a number or a direction to draw.

    ``max_rows``: beyond this many rows only the projects' own rows are drawn (each project's shrunken effect, and
    its raw estimate where it has one), not a row for each of its estimates and findings; ``omitted`` says how many
    rows that left out (a forest of 1,100 rows, as a 10,000-estimate base gives, is 30,000 pixels tall)."""
    dom = result.domains[domain]
    rows = forest_rows(evidence, result, domain)
    if not any(r["kind"] == "direction" or r.get("x") is not None or r.get("raw_x") is not None for r in rows):
        return None
    omitted = 0
    if max_rows is not None and len(rows) > max_rows:
        kept = [r for r in rows if r["kind"] not in ("estimate", "direction")]
        rows, omitted = kept, len(rows) - len(kept)
    hdi_pct = f"{100 * dom.mu.hdi_prob:g}%"
    labels = [_row_label(r) for r in rows]
    label_right = min(max([text_width(s) for s in labels] + [60.0]) + 12, 0.42 * WIDTH)
    plot_top, right = 46.0, WIDTH - 16.0
    plot_bottom = plot_top + ROW * len(rows)

    values = [v for r in rows for k, v in r.items() if k in ("x", "low", "high", "raw_x", "raw_low", "raw_high") and finite(v) is not None]
    span = (max(values) - min(values)) if len(values) > 1 else 1.0
    arrow_len = 0.08 * (span or 1.0)
    mid, benefit = finite(dom.mid), dom.beneficial
    edge = (mid if benefit == "increase" else -mid) if mid and benefit in ("increase", "decrease") else None
    directions = [r for r in rows if r["kind"] == "direction"]
    reach = [0.0] + ([arrow_len, -arrow_len] if directions else []) + ([edge] if edge is not None else [])
    lo, hi = padded(values + reach)
    ticks, step = nice_ticks(lo, hi)
    x = Scale(lo, hi, label_right + 8, right)

    marks: list[dict] = [text(4, 18, f"{shortened(dom.label, 60)}: raw and shrunken project effects", size=FONT + 2, weight="bold")]
    marks.append(line(x(0), plot_top, x(0), plot_bottom, MUTED, 0.9, cls="zero"))
    if edge is not None:
        marks.append(line(x(edge), plot_top, x(edge), plot_bottom, "#888888", 0.8, dash="1.5 2.5", cls="mid"))
    if benefit in ("increase", "decrease"):  # from zero towards benefit, moved in where the figure ends first
        words = "favours the initiative →" if benefit == "increase" else "← favours the initiative"
        room = text_width(words, FONT - 1) + 4
        at = min(x(0) + 4, WIDTH - room) if benefit == "increase" else max(x(0) - 4, room)
        marks.append(text(at, plot_top - 8, words, anchor="start" if benefit == "increase" else "end", size=FONT - 1, colour="#1b6f8a"))
    pooled_rows = sum(r["kind"] in ("pooled", "predictive") for r in rows)
    if pooled_rows:
        y_sep = plot_bottom - ROW * pooled_rows
        marks.append(line(label_right + 8, y_sep, right, y_sep, FAINT, 0.8))

    designs_seen: list[str] = []
    for i, (r, label) in enumerate(zip(rows, labels)):
        y = plot_top + ROW * (i + 0.5)
        if r.get("design") and r["design"] not in designs_seen:
            designs_seen.append(r["design"])
        strong = r["kind"] in ("project", "pooled", "predictive")
        marks.append(text(label_right, y, label, anchor="end", weight="bold" if strong else "normal",
                          style="normal" if strong else "italic", colour=INK if strong else "#444444", cls="label"))
        marks.extend(_row_marks(r, y, x, arrow_len, right))
    marks += x_axis(x, plot_bottom, ticks, [tick_text(t, step) for t in ticks])
    arrow_words = {"increase": "higher is better →", "decrease": "← lower is better"}.get(benefit, "direction of benefit not stated")
    centre = (x.start + x.end) / 2
    marks.append(text(centre, plot_bottom + 34, f"{shortened(dom.label)}: {metric_units(dom.metric)}", anchor="middle"))
    marks.append(text(centre, plot_bottom + 50, arrow_words, anchor="middle"))
    keys, bottom = legend(_forest_legend(rows, designs_seen, hdi_pct, mid if edge is not None else None), plot_bottom + 66, 0, WIDTH)
    marks += keys
    return {"width": WIDTH, "height": r2(bottom + 8), "alt": f"Forest plot for {dom.label}", "name": f"forest-{safe_name(domain)}",
            "marks": marks, "omitted": omitted}


def _row_label(row: dict) -> str:
    if not row.get("in_model", True) and row["kind"] == "project":
        return shortened(row["label"], MAX_LABEL - 13) + " (not pooled)"
    return shortened(row["label"], MAX_LABEL)


def _row_marks(r: dict, y: float, x: Scale, arrow_len: float, right: float) -> list[dict]:
    """One forest row's marks: raw and shrunken intervals and markers, a direction's arrow and words, or the pooled
    diamond and the predictive interval."""
    kind = r["kind"]
    colour, shape = DESIGN_STYLE.get(r.get("design") or "", ("#333333", "o"))
    alpha = 1.0 if r.get("in_model", True) else 0.4
    v = {k: finite(r.get(k)) for k in ("x", "low", "high", "raw_x", "raw_low", "raw_high")}
    marks: list[dict] = []
    if kind in ("project", "estimate"):
        both = v["x"] is not None and v["raw_x"] is not None
        if v["raw_x"] is not None:
            ry = y - PAIR_OFFSET if both else y
            if v["raw_low"] is not None and v["raw_high"] is not None:
                marks.append(line(x(v["raw_low"]), ry, x(v["raw_high"]), ry, colour, 1.0, opacity=alpha, cls="raw"))
            marks.append(marker(x(v["raw_x"]), ry, shape, 8.5, colour, filled=False, opacity=alpha, cls="raw",
                                tip=_tip(r["label"], "raw estimate, 95% CI", v["raw_x"], v["raw_low"], v["raw_high"])))
        if v["x"] is not None:
            sy = y + PAIR_OFFSET if both else y
            if v["low"] is not None and v["high"] is not None:
                marks.append(line(x(v["low"]), sy, x(v["high"]), sy, colour, 3.0, opacity=alpha, cls="shrunken"))
            marks.append(marker(x(v["x"]), sy, shape, 10.5, colour, opacity=alpha, cls="shrunken",
                                tip=_tip(r["label"], "shrunken effect", v["x"], v["low"], v["high"])))
    elif kind == "direction":
        sign = {"increase": 1, "decrease": -1}.get(str(r.get("counted", r.get("direction"))))  # on this axis
        words = direction_text(r)
        if sign is None:
            marks.append(line(x(0), y - 6, x(0), y + 6, colour, 1.4, opacity=alpha, cls="direction"))
        else:
            marks.extend(arrow(x(0), x(sign * arrow_len), y, colour, alpha))
        beyond = x(arrow_len * 1.25) if sign == 1 else x(arrow_len * 0.25)  # right of zero: past the head or the tick
        before = x(-arrow_len * 1.25) if sign == -1 else x(-arrow_len * 0.25)
        marks.append(_side_text(words, y, (before - x.start, before), (right - beyond, beyond), sign == -1, colour, alpha))
    elif kind == "pooled" and v["low"] is not None and v["high"] is not None:
        marks.append(path(outline([(x(v["low"]), y), (x(v["x"]), y - 7), (x(v["high"]), y), (x(v["x"]), y + 7)]), fill="#222222",
                          cls="pooled", tip=_tip(r["label"], "", v["x"], v["low"], v["high"])))
    elif kind == "predictive" and v["low"] is not None and v["high"] is not None:
        marks += [line(x(v["low"]), y, x(v["high"]), y, "#222222", 1.6, dash="6 3", cls="predictive"),
                  line(x(v["low"]), y - 7, x(v["low"]), y + 7, "#222222", 1.0), line(x(v["high"]), y - 7, x(v["high"]), y + 7, "#222222", 1.0),
                  marker(x(v["x"]), y, "o", 7, "#222222", filled=False, cls="predictive", tip=_tip(r["label"], "", v["x"], v["low"], v["high"]))]
    return marks


def _side_text(words: str, y: float, left: tuple[float, float], right: tuple[float, float], leftward: bool, colour: str,
               opacity: float) -> dict:
    """A direction's words beside its arrow: on the arrow's side where they fit, else on the side with more room,
    cut to fit it (the whole in a tooltip). ``left``, ``right``: (room in px, where the words start)."""
    size = FONT - 1
    fits = (left if leftward else right)[0] >= text_width(words, size)
    go_left = leftward if fits else left[0] > right[0]
    room, at = left if go_left else right
    shown = words if fits else shortened(words, max(int(room / (CHAR_EM * size)), 4))
    return {**text(at, y, shown, anchor="end" if go_left else "start", size=size, colour=colour, opacity=opacity, cls="direction"),
            "tip": None if shown == words else words}


def _tip(label: str, what: str, mid, low, high) -> str:
    """A marker's tooltip: what it is and its numbers (three significant digits, a true minus sign)."""
    interval = f" [{number(low)}, {number(high)}]" if low is not None and high is not None else ""
    return f"{label}: {what + ' ' if what else ''}{number(mid)}{interval}"


def _forest_legend(rows: list[dict], designs: list[str], hdi_pct: str, mid: float | None) -> list[tuple[list[dict], str]]:
    items = [([marker(0, 0, DESIGN_STYLE.get(d, ("#333333", "o"))[1], 10, DESIGN_STYLE.get(d, ("#333333", "o"))[0])], design_label(d))
             for d in sorted(designs, key=design_rank)]
    kinds = {r["kind"] for r in rows}
    if any(finite(r.get("raw_x")) is not None for r in rows):
        items.append(([line(-9, 0, 9, 0, MUTED), marker(0, 0, "o", 8, MUTED, filled=False)], "raw estimate, 95% CI"))
    if any(finite(r.get("x")) is not None for r in rows if r["kind"] in ("project", "estimate")):
        items.append(([line(-9, 0, 9, 0, MUTED, 3.0), marker(0, 0, "o", 10, MUTED)], f"shrunken effect, {hdi_pct} HDI"))
    if "direction" in kinds:
        items.append((arrow(-9, 9, 0, MUTED), "direction only, no number"))
    if "pooled" in kinds:
        items.append(([path(outline([(-9, 0), (0, -6), (9, 0), (0, 6)]), fill="#222222")], f"pooled effect μ, {hdi_pct} HDI"))
    if "predictive" in kinds:
        items.append(([line(-9, 0, 9, 0, "#222222", 1.6, dash="6 3")], f"new project, {hdi_pct} predictive interval"))
    if mid is not None:
        items.append(([line(0, -7, 0, 7, "#888888", 0.8, dash="1.5 2.5")], f"minimal important difference ({mid:g})"))
    return items


# ---------------------------------------------------------------------------- line charts


@dataclass(frozen=True)
class Series:
    """One line of a panel: its points, label and look (a colour from :data:`CYCLE` where it has none)."""

    points: tuple[tuple[float, float], ...]
    label: str
    colour: str
    dash: str | None = None
    marker: str | None = None


@dataclass(frozen=True)
class Panel:
    """One plotting area of a line chart: y from 0 to ``y_max`` (percentages), x linear or logarithmic."""

    series: tuple[Series, ...]
    ylabel: str
    title: str | None = None
    y_max: float = 100.0
    log_x: bool = False
    x_ticks: tuple[float, ...] | None = None  # None: round ticks over the data
    x_lines: tuple[float, ...] = ()  # dotted verticals (a willingness to pay)


def line_chart(panels: Sequence[Panel], xlabel: str, alt: str, name: str, legend_columns: int = 2) -> dict:
    """Panels side by side sharing the x label, then the legend (one entry per label) below: view data for ``chart.svg``."""
    height, top = 300.0, 30.0 if any(p.title for p in panels) else 12.0
    slot = WIDTH / len(panels)
    marks: list[dict] = []
    for n, panel in enumerate(panels):
        left, right = n * slot + 62, (n + 1) * slot - 14
        xs = [px for s in panel.series for px, _ in s.points] + list(panel.x_lines)
        if not xs:
            xs = [0.0, 1.0]
        if panel.log_x:
            lo, hi = min(xs) / 1.25, max(xs) * 1.25
            ticks = list(panel.x_ticks or sorted(set(xs)))
            labels = [f"{t:g}" for t in ticks]
        else:
            lo, hi = padded(xs)
            ticks, step = nice_ticks(lo, hi) if panel.x_ticks is None else (list(panel.x_ticks), 1.0)
            labels = [tick_text(t, step) for t in ticks]
        x = Scale(lo, hi, left, right, log=panel.log_x)
        y = Scale(0, panel.y_max, top + height, top)
        y_ticks, y_step = nice_ticks(0, panel.y_max, 6)
        marks += x_axis(x, top + height, ticks, labels) + y_axis(y, left, y_ticks, [tick_text(t, y_step) for t in y_ticks])
        marks.append(text(left - 46, top + height / 2, panel.ylabel, anchor="middle", size=FONT - 1, rotate=True))
        if panel.title:
            marks.append(text((left + right) / 2, 14, panel.title, anchor="middle", weight="bold"))
        for value in panel.x_lines:
            marks.append(line(x(value), top, x(value), top + height, MUTED, 0.8, dash="1.5 2.5", cls="threshold"))
        for s in panel.series:
            pts = [(x(px), y(py)) for px, py in s.points]
            marks.append(path(polyline(pts), stroke=s.colour, width=1.6, dash=s.dash, cls="series", tip=s.label))
            if s.marker:
                marks += [marker(px, py, s.marker, 7, s.colour) for px, py in pts]
    marks.append(text(WIDTH / 2, top + height + 36, xlabel, anchor="middle"))
    seen: dict[str, Series] = {}
    for s in (s for panel in panels for s in panel.series):
        seen.setdefault(s.label, s)
    items = [([line(-9, 0, 9, 0, s.colour, 1.6, dash=s.dash)] + ([marker(0, 0, s.marker, 7, s.colour)] if s.marker else []), s.label)
             for s in seen.values()]
    keys, bottom = legend(items, top + height + 52, 0, WIDTH, legend_columns)
    return {"width": WIDTH, "height": r2(bottom + 8), "alt": alt, "name": name, "marks": marks + keys}


def ceac_chart(ce, names: Mapping[str, str] | None = None) -> dict:
    """The acceptability curves (:func:`metaeval.costs.ceac_figure`'s lines): P(worth it) against willingness to pay
    per person helped, a colour per cost figure and outcome, solid for the model's effect and dashed for the trial's."""
    names = names or {}
    colours: dict[tuple[str, str], str] = {}
    series = []
    for r in ce.results:
        colour = colours.setdefault((r.cost, r.domain), CYCLE[len(colours) % len(CYCLE)])
        series.append(Series(tuple((x / 1000, 100 * y) for x, y in r.ceac), shortened(f"{names.get(r.project, r.project)}: per {r.outcome} ({r.basis})", 70),
                             colour, None if r.basis == "model" else "6 3"))
    wtp = tuple(sorted({r.wtp / 1000 for r in ce.results if r.wtp is not None}))
    xlabel = "willingness to pay per person helped, thousand DKK" + (f" ({ce.results[0].currency})" if ce.results else "")
    return line_chart([Panel(tuple(series), "P(worth it at that price), %", x_lines=wtp)], xlabel, "Cost-effectiveness acceptability curves",
                      "cost-effectiveness")


def plan_chart(plan) -> dict:
    """The planning curves (:func:`metaeval.planning.plan_figure`'s): expected interval width (% of today's) and
    P(the verdict changes) against the new study's size, one line per domain, on a log axis of participants per arm."""
    widths, changes = [], []
    for i, dp in enumerate(plan.domains.values()):
        xs = [p.n if p.n is not None else p.se for p in dp.points]
        look = {"label": shortened(dp.label, 28), "colour": CYCLE[i % len(CYCLE)], "dash": None if i < 6 else "6 3", "marker": "osD^vP"[i % 6]}
        widths.append(Series(tuple(zip(xs, (100 * p.width_ratio for p in dp.points))), **look))
        changes.append(Series(tuple(zip(xs, (100 * p.p_change for p in dp.points))), **look))
    by_n = all(p.n is not None for dp in plan.domains.values() for p in dp.points)
    ticks = tuple(sorted({p.n for dp in plan.domains.values() for p in dp.points})) if by_n else None
    top = max([105.0] + [1.05 * y for s in widths for _, y in s.points])
    panels = [Panel(tuple(widths), "expected interval width (% of today's)", "How much narrower", y_max=top, log_x=by_n, x_ticks=ticks),
              Panel(tuple(changes), "P(the verdict changes), %", "How likely a different verdict", log_x=by_n, x_ticks=ticks)]
    return line_chart(panels, "participants per arm in a new randomised evaluation" if by_n else "SE of the new evaluation",
                      "Expected interval width and probability of a changed verdict against study size", "next-evaluation", legend_columns=4)


# ---------------------------------------------------------------------------- drawing


@cache
def _template():
    from importlib import resources

    from jinja2 import Environment, StrictUndefined

    env = Environment(autoescape=True, undefined=StrictUndefined, keep_trailing_newline=True)
    return env.from_string((resources.files("metaeval") / "templates" / "chart.svg").read_text(encoding="utf-8"))


def svg(chart: dict) -> str:
    """A chart's view data drawn as an SVG document (text; the report puts it inline)."""
    return _template().render(c=chart)
