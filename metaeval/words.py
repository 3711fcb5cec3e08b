"""One vocabulary and number style for everything a person reads: the design ladder's names, units,
numbers, probabilities and verdicts (the report, the figures and the command line use these).
"""

from __future__ import annotations

import math

from metaeval.cells import finite
from metaeval.schema import DESIGN_LADDER

#: Designs from strongest to weakest (schema.DESIGN_LADDER), plus a plain CSV's "unspecified".
DESIGN_ORDER = (*DESIGN_LADDER, "unspecified")
DESIGN_LABELS = {
    "rct": "randomised trial",
    "matched_register": "matched register control",
    "comparison_group": "comparison group",
    "area_comparison": "area comparison",
    "before_after": "before–after",
    "target_benchmark": "target or benchmark",
    "single_arm": "single arm",
    "unspecified": "design not stated",
}
#: A domain metric's unit, in full (axis labels) and short (after a number) and compact (table headers).
METRIC_UNITS = {
    "smd": "standardised mean difference (SD units)",
    "pp": "percentage points",
    "share": "share (0–1)",
    "hours": "hours",
    "grade": "grade points",
    "score": "score points",
    "count": "count",
    "dkk": "DKK",
    "dkk_1000": "thousand DKK",
    "log_or": "log odds ratio",
    "md": "mean difference",
}
_UNIT_SHORT = {"smd": "SD", "pp": "percentage points", "hours": "hours", "grade": "grade points", "score": "points",
               "dkk": "DKK", "dkk_1000": "thousand DKK"}
_UNIT_COMPACT = {"smd": "SD", "pp": "pp", "grade": "grade points", "dkk_1000": "1,000 DKK",
                 "log_or": "log odds ratio", "md": "mean difference"}
#: Decimals a number in each metric is shown with (others: three significant digits).
_DECIMALS = {"smd": 2, "log_or": 2, "md": 2, "grade": 2, "share": 3, "pp": 1, "hours": 0, "count": 1, "score": 1,
             "dkk": 0, "dkk_1000": 1}
#: P(the average effect is beneficial) -> words, from the top down.
_VERDICTS = ((0.975, "Very likely beneficial", "good2"), (0.9, "Likely beneficial", "good1"), (0.7, "Possibly beneficial", "lean"),
             (0.3, "Unclear", "unclear"), (0.1, "Possibly adverse", "leanbad"), (0.025, "Likely adverse", "bad1"))
#: The P(beneficial) values where the verdict changes, from the top down.
VERDICT_CUTS = tuple(threshold for threshold, _, _ in _VERDICTS)


def design_label(design) -> str:
    """Readable name of a design (the code itself when unknown)."""
    return DESIGN_LABELS.get(str(design), str(design))


def design_rank(design) -> int:
    """Place on the design ladder (0 = randomised); unknown designs last."""
    return DESIGN_ORDER.index(design) if design in DESIGN_ORDER else len(DESIGN_ORDER)


def metric_units(metric) -> str:
    """Readable unit of a domain metric ("effect" when unknown)."""
    if metric is None or (isinstance(metric, float) and math.isnan(metric)):
        return "effect"
    return METRIC_UNITS.get(str(metric), f"effect size ({metric})")


def unit_short(metric) -> str:
    """The unit a number in this metric is read in ('' when the number speaks for itself or is unknown)."""
    return _UNIT_SHORT.get(str(metric), "") if metric is not None else ""


def unit_compact(metric) -> str:
    return _UNIT_COMPACT.get(str(metric), metric_units(metric))


def number(x, metric=None) -> str:
    """A number at the precision the domain's metric warrants; a true minus sign; '–' when missing."""
    value = finite(x) if not isinstance(x, bool) else None
    if value is None:
        return "–"
    decimals = _DECIMALS.get(str(metric)) if metric is not None else None
    if decimals is None:
        text = f"{value:.3g}"
    else:
        text = f"{value:,.{decimals}f}"
        if float(text.replace(",", "")) == 0:
            text = f"{0:.{decimals}f}"  # no "-0.0"
    return text.replace("-", "−")


def shortened(value, limit: int = 48) -> str:
    """Data text on one line, cut to ``limit`` characters with an ellipsis (labels in figures); '' when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def count(n) -> str:
    """A whole number with thousands separators; '–' when missing."""
    value = finite(n) if not isinstance(n, bool) else None
    return "–" if value is None else f"{value:,.0f}"


def with_unit(x, metric) -> str:
    """A number followed by its unit, where it has one."""
    unit = unit_short(metric)
    return f"{number(x, metric)} {unit}" if unit else number(x, metric)


def interval(low, high, metric=None) -> str:
    """'a to b', each end formatted for the metric."""
    return f"{number(low, metric)} to {number(high, metric)}"


def probability(p) -> str:
    """A probability as a percentage, never claiming certainty: '>99%' and '<1%' at the ends."""
    value = finite(p)
    if value is None:
        return "–"
    if value > 0.995:
        return ">99%"
    if value < 0.005:
        return "<1%"
    return f"{100 * value:.0f}%"


def exact_difference(check) -> str:
    """An MCMC fit's largest difference from the exact answer (a ``CrossCheck``), for the report and the terminal alike."""
    return f"{check.max_discrepancy_sd:.2g} posterior SDs ({check.max_z:.2g} Monte Carlo SEs; {check.quantity})"


def exact_not_computed(diagnostics) -> str:
    """Why an MCMC fit has no comparison with the exact answer: the reason given, or that this fit was never checked."""
    return diagnostics.cross_check_skipped or "not asked for this fit (`metaeval run` checks a fit; `metaeval fit` does not, to stay quick)"


def verdict(p_beneficial) -> tuple[str, str]:
    """A plain-language reading of P(the average effect is beneficial), and a CSS class for it."""
    p = finite(p_beneficial)
    if p is None:
        return "Not estimated", "none"
    return next(((words, css) for threshold, words, css in _VERDICTS if p >= threshold), ("Very likely adverse", "bad2"))


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
