"""Prior distributions written as text, e.g. ``halfcauchy(5)`` or ``normal(0, 0.5)``.

One small grammar serves the model TOML files, the ``--prior PARAM=DIST(args)``
option, the MCMC model (``to_pymc``) and the exact engine (``logpdf`` via scipy),
so a prior means the same thing on every path.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

#: family -> (parameter names, support); parameters follow PyMC's conventions.
FAMILIES: dict[str, tuple[tuple[str, ...], str]] = {
    "normal": (("mu", "sigma"), "real"),
    "studentt": (("nu", "mu", "sigma"), "real"),
    "flat": ((), "real"),
    "halfnormal": (("sigma",), "positive"),
    "halfcauchy": (("beta",), "positive"),
    "halfstudentt": (("nu", "sigma"), "positive"),
    "exponential": (("lam",), "positive"),
    "lognormal": (("mu", "sigma"), "positive"),
    "uniform": (("lower", "upper"), "interval"),
}
PYMC_NAMES = {
    "normal": "Normal",
    "studentt": "StudentT",
    "flat": "Flat",
    "halfnormal": "HalfNormal",
    "halfcauchy": "HalfCauchy",
    "halfstudentt": "HalfStudentT",
    "exponential": "Exponential",
    "lognormal": "LogNormal",
    "uniform": "Uniform",
}
#: A prior is a short text; anything longer is refused before it is parsed.
MAX_PRIOR_CHARS = 200
_TEXT = re.compile(r"^\s*([a-z]+)\s*\(\s*([^()]*)\)\s*$")
_ASSIGN = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*=\s*(.+)$")


class PriorError(ValueError):
    """A prior that cannot be parsed or has invalid parameters."""


@dataclass(frozen=True)
class Prior:
    """A named distribution family with its parameters (PyMC parameterisation)."""

    family: str
    params: tuple[float, ...]

    @property
    def support(self) -> str:
        return FAMILIES[self.family][1]

    def kwargs(self) -> dict[str, float]:
        return dict(zip(FAMILIES[self.family][0], self.params))

    def scaled(self, factor: float) -> Prior:
        """The same prior on a metric ``factor`` times larger (location and scale parameters scale)."""
        scaled = [
            p * factor if name in ("mu", "sigma", "beta", "lower", "upper") else (p / factor if name == "lam" else p)
            for name, p in zip(FAMILIES[self.family][0], self.params)
        ]
        if self.family == "lognormal":  # location is on the log scale
            scaled = [self.params[0] + math.log(factor), self.params[1]]
        return Prior(self.family, tuple(scaled))

    def __str__(self) -> str:
        return f"{self.family}({', '.join(f'{p:g}' for p in self.params)})"

    @property
    def sd(self) -> float:
        """The distribution's standard deviation (infinite where it has none: flat, halfcauchy, Student-t with nu <= 2)."""
        k, f = self.kwargs(), self.family
        if f == "normal":
            return k["sigma"]
        if f in ("flat", "halfcauchy"):
            return math.inf
        if f in ("studentt", "halfstudentt"):
            nu, sigma = k["nu"], k["sigma"]
            if nu <= 2:
                return math.inf
            second = sigma**2 * nu / (nu - 2)
            if f == "studentt":
                return math.sqrt(second)
            mean = 2 * sigma * math.sqrt(nu / math.pi) * math.exp(math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2)) / (nu - 1)
            return math.sqrt(second - mean**2)
        if f == "halfnormal":
            return k["sigma"] * math.sqrt(1 - 2 / math.pi)
        if f == "exponential":
            return 1 / k["lam"]
        if f == "lognormal":
            return math.sqrt(math.expm1(k["sigma"] ** 2)) * math.exp(k["mu"] + k["sigma"] ** 2 / 2)
        if f == "uniform":
            return (k["upper"] - k["lower"]) / math.sqrt(12)
        raise AssertionError(f)  # unreachable: families are checked on construction

    def to_pymc(self, name: str, **kwargs):
        """Create the PyMC random variable (inside a model context)."""
        import pymc as pm

        return getattr(pm, PYMC_NAMES[self.family])(name, **self.kwargs(), **kwargs)

    def logpdf(self, x):
        """Log density at ``x`` (numpy array); the exact engine integrates against it.

        Closed forms with numpy and ``scipy.special`` rather than ``scipy.stats``, whose
        import alone costs more than an exact fit of 1,000 studies.
        """
        import numpy as np
        from scipy.special import gammaln

        x = np.asarray(x, dtype=float)
        k = self.kwargs()
        f = self.family
        half_log_2pi = 0.5 * math.log(2 * math.pi)

        def normal(mu: float, sigma: float):
            return -0.5 * ((x - mu) / sigma) ** 2 - math.log(sigma) - half_log_2pi

        def student(nu: float, mu: float, sigma: float):
            const = gammaln((nu + 1) / 2) - gammaln(nu / 2) - 0.5 * math.log(nu * math.pi) - math.log(sigma)
            return const - (nu + 1) / 2 * np.log1p(((x - mu) / sigma) ** 2 / nu)

        def positive(values):
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(x >= 0, values, -np.inf)

        if f == "normal":
            return normal(k["mu"], k["sigma"])
        if f == "studentt":
            return student(k["nu"], k["mu"], k["sigma"])
        if f == "flat":
            return np.zeros_like(x)
        if f == "halfnormal":
            return positive(math.log(2) + normal(0.0, k["sigma"]))
        if f == "halfcauchy":
            return positive(math.log(2 / (math.pi * k["beta"])) - np.log1p((x / k["beta"]) ** 2))
        if f == "halfstudentt":
            return positive(math.log(2) + student(k["nu"], 0.0, k["sigma"]))
        if f == "exponential":
            return positive(math.log(k["lam"]) - k["lam"] * x)
        if f == "lognormal":
            with np.errstate(divide="ignore", invalid="ignore"):
                logx = np.log(x)
                dens = -logx - math.log(k["sigma"]) - half_log_2pi - 0.5 * ((logx - k["mu"]) / k["sigma"]) ** 2
            return np.where(x > 0, dens, -np.inf)
        if f == "uniform":
            return np.where((x >= k["lower"]) & (x <= k["upper"]), -math.log(k["upper"] - k["lower"]), -np.inf)
        raise AssertionError(f)  # unreachable: families are checked on construction


def parse_prior(text: str) -> Prior:
    """Parse ``family(arg, ...)``; raises PriorError naming what was expected."""
    if len(str(text)) > MAX_PRIOR_CHARS:
        raise PriorError(f"expected DIST(args) such as halfnormal(0.5), got {len(str(text)):,} characters "
                         f"(at most {MAX_PRIOR_CHARS} are read): {str(text)[:40]!r}...")
    m = _TEXT.match(str(text).lower())
    if not m:
        raise PriorError(f"expected DIST(args) such as halfnormal(0.5), got {text!r}")
    family, arg_text = m.group(1), m.group(2)
    if family not in FAMILIES:
        raise PriorError(f"unknown distribution {family!r}; expected one of {', '.join(FAMILIES)}")
    names = FAMILIES[family][0]
    try:
        params = tuple(float(a) for a in arg_text.split(",")) if arg_text.strip() else ()
    except ValueError:
        raise PriorError(f"{text!r}: arguments must be numbers") from None
    if len(params) != len(names):
        raise PriorError(f"{family} takes {len(names)} argument(s) ({', '.join(names) or 'none'}), got {len(params)}")
    for name, value in zip(names, params):
        if not math.isfinite(value):
            raise PriorError(f"{family}: {name} must be finite")
        if name in ("sigma", "beta", "lam", "nu") and value <= 0:
            raise PriorError(f"{family}: {name} must be positive, got {value:g}")
    if family == "uniform" and params[0] >= params[1]:
        raise PriorError("uniform: lower must be below upper")
    return Prior(family, params)


def parse_assignment(text: str) -> tuple[str, Prior]:
    """Parse a command-line override ``PARAM=DIST(args)``."""
    m = _ASSIGN.match(text)
    if not m:
        raise PriorError(f"expected PARAM=DIST(args) such as tau=halfcauchy(5), got {text!r}")
    return m.group(1), parse_prior(m.group(2))
