"""What the exact core (:mod:`metaeval.exact_core`) integrates: one :class:`Block` of the model as arrays, the
error it raises for a block outside its reach, and the settings of its quadrature rules (NumPy only)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from metaeval.priors import Prior

STEP = 0.25  # t-step of the (tau, omega) grid (errors of 1e-4 SD on the tests' cases; the coarse rule's, 3e-3 on the bundled evidence)
SE_STEP = 0.3  # t-step of the rule over a censored observation's SE, in log se
ETA_STEP = 0.15  # t-step of the trapezoid rule on one eta dimension, x = sinh(t)
COARSE = 1.5  # the coarse rules' steps are this much larger
DROP = 25.0  # nodes where the log density is this far below its maximum are negligible (e^-25 ~ 1e-11)
REACH = 60.0  # furthest a grid goes from its centre, in log units (a heavier tail is cut here: Level.edge_density)
NARROW = 0.7  # cdf: a component narrower than this times eta's spread (c u_scale) takes the narrow branch
NEW = -1  # quantity row of a new cluster's effect, mu + tau z
WEIGHT_FLOOR = 1e-13  # mixture components lighter than this (relative) are left out of intervals, not moments
CHUNK = 200_000  # rows x components evaluated at once (memory)
COMPRESS_BUDGET = 100_000  # rows x (tau, omega) nodes above which a compressed rule is tried (no censored data)
COMPRESS_TOL = 1e-7  # the largest CDF error a compressed rule may make at its probes
COMPARE_BUDGET = 40_000  # P(first) and pairwise among 4 or more rows: a systematic sample of this many components
# over the rows (P(first)) or their square (pairwise), at least 32 and at most 256


class NoExactForm(ValueError):
    """The block is outside what this engine integrates (the reason is the message)."""


# ---------------------------------------------------------------------------- input


@dataclass(frozen=True, eq=False)
class Block:
    """One independent block of the model as arrays (:mod:`metaeval.exact_core`'s docstring). Indices are 0-based; an offset
    index of -1 means none. ``se_prior`` has one prior per censored observation."""

    n_clusters: int
    mu_prior: Prior
    tau_prior: Prior
    omega_prior: Prior | None
    y: np.ndarray
    v: np.ndarray
    cluster: np.ndarray
    offset: np.ndarray
    residual: np.ndarray
    offset_cluster: np.ndarray
    offset_mean: np.ndarray
    offset_sd: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    c_cluster: np.ndarray
    c_offset: np.ndarray
    c_residual: np.ndarray
    c_weight: np.ndarray
    se_prior: tuple[Prior, ...] = ()

    @classmethod
    def build(cls, *, n_clusters, mu_prior, tau_prior, omega_prior=None, estimates=(), offsets=(), censored=()):
        """From rows: ``estimates`` (y, v, cluster, offset, residual), ``offsets`` (cluster, mean, sd),
        ``censored`` (lo, hi, cluster, offset, residual, weight, se_prior)."""
        e = list(zip(*estimates)) if len(estimates) else [()] * 5
        o = list(zip(*offsets)) if len(offsets) else [()] * 3
        c = list(zip(*censored)) if len(censored) else [()] * 7

        def f(x):
            return np.asarray(x, dtype=float)

        def i(x):
            return np.asarray(x, dtype=np.int64)

        block = cls(n_clusters=int(n_clusters), mu_prior=mu_prior, tau_prior=tau_prior, omega_prior=omega_prior,
                    y=f(e[0]), v=f(e[1]), cluster=i(e[2]), offset=i(e[3]), residual=np.asarray(e[4], dtype=bool),
                    offset_cluster=i(o[0]), offset_mean=f(o[1]), offset_sd=f(o[2]),
                    lo=f(c[0]), hi=f(c[1]), c_cluster=i(c[2]), c_offset=i(c[3]), c_residual=np.asarray(c[4], dtype=bool),
                    c_weight=f(c[5]), se_prior=tuple(c[6]))
        block.check()
        return block

    def check(self) -> None:
        if self.mu_prior.family not in ("normal", "flat"):
            raise NoExactForm(f"mu's prior {self.mu_prior} is not normal or flat, so mu is not conditionally Gaussian")
        for name, prior in (("tau", self.tau_prior), ("omega", self.omega_prior), *(("se", p) for p in self.se_prior)):
            if prior is not None and not (prior.support == "positive" or (prior.family == "uniform" and prior.params[0] >= 0)):
                raise NoExactForm(f"{name} needs a proper prior on positive values, got {prior}")
        if (self.residual.any() or self.c_residual.any()) and self.omega_prior is None:
            raise ValueError("observations flagged with a residual need an omega prior")
        if self.mu_prior.family == "flat" and self.y.size == 0:
            raise NoExactForm("a flat mu prior with no Gaussian observation gives an improper posterior")
        if self.y.size + self.lo.size == 0:
            raise ValueError("a block needs at least one observation")
        if np.any(~np.isfinite(self.y)) or np.any(~(self.v > 0)) or np.any(~np.isfinite(self.v)):
            raise ValueError("observations need finite values and positive variances")
        if np.any(~(self.offset_sd > 0)):
            raise ValueError("offset priors need positive SDs")
        if np.any(~(self.lo < self.hi)) or np.any(~(self.c_weight > 0)):
            raise ValueError("censored observations need lo < hi and positive weights")

    @property
    def has_omega(self) -> bool:
        return self.omega_prior is not None

    def digest(self) -> str:
        """A hash of everything the block's posterior depends on (two blocks with one digest have one posterior)."""
        import hashlib

        h = hashlib.sha256()
        for f in fields(self):
            value = getattr(self, f.name)
            h.update(f.name.encode())
            if isinstance(value, np.ndarray):
                h.update(value.dtype.str.encode() + np.ascontiguousarray(value).tobytes())
            else:  # an int, or priors: their repr is exact (family and float params)
                h.update(repr(value).encode())
        return h.hexdigest()
