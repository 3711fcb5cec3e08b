"""Posterior draws per domain: what comparisons, rankings and study planning are computed from.

A fit's :class:`~metaeval.result.Result` holds summaries; questions about several quantities at
once (is A better than B, which is best, what would a new study change) need joint draws. This
module is the one door to them: :func:`domain_draws` turns a draw source into
:class:`DomainDraws` per domain, plain NumPy arrays in each domain's own metric:

- a posterior from :func:`metaeval.fit` / ``fit_cached(...).posterior`` (xarray DataTree);
- a ``CachedFit``;
- a mapping ``{domain: DomainDraws}`` (as given);
- any object with a ``domain_draws()`` method returning that mapping (how another engine,
  e.g. an exact engine that draws on request, plugs in without this module knowing it).

``theta`` holds each project's *true* effect, the model's ``theta_project``: the estimates
measure it plus the design's bias, so it is the bias-adjusted effect. Draws keep their chains
(shape ``(chain, draw)``) so Monte Carlo errors can be computed with ArviZ.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True, eq=False)
class DomainDraws:
    """One domain's joint posterior draws: the average effect, the spread and every project's effect."""

    domain: str
    label: str
    metric: str | None
    beneficial: str  # "increase" | "decrease"
    mid: float | None
    scale: float
    hdi_prob: float
    projects: tuple[str, ...]
    designs: tuple[str, ...]  # per project: its design(s), "+"-joined
    mu: np.ndarray  # (chain, draw)
    tau: np.ndarray  # (chain, draw)
    theta: np.ndarray  # (project, chain, draw): bias-adjusted project effects
    raw: tuple[float | None, ...] = ()  # per project: its data as one estimate (None: direction-only), if known
    raw_se: tuple[float | None, ...] = ()

    def __post_init__(self) -> None:
        if self.beneficial not in ("increase", "decrease"):
            raise ValueError(f"beneficial must be 'increase' or 'decrease', got {self.beneficial!r}")
        if self.mu.shape != self.tau.shape or self.mu.ndim != 2:
            raise ValueError("mu and tau must be arrays of the same (chain, draw) shape")
        if self.theta.shape != (len(self.projects), *self.mu.shape):
            raise ValueError(f"theta must have shape (project, chain, draw) = {(len(self.projects), *self.mu.shape)}, got {self.theta.shape}")
        if len(self.designs) != len(self.projects) or len(set(self.projects)) != len(self.projects):
            raise ValueError("projects must be unique, with one design entry each")
        if any(len(x) not in (0, len(self.projects)) for x in (self.raw, self.raw_se)):
            raise ValueError("raw and raw_se must have one entry per project (or none)")

    @property
    def sign(self) -> float:
        """+1 where an increase is beneficial, -1 where a decrease is: ``sign * x > 0`` means x helps."""
        return -1.0 if self.beneficial == "decrease" else 1.0

    @property
    def n_draws(self) -> int:
        return int(self.mu.size)

    def digest(self) -> bytes:
        """SHA-256 of every field (arrays by dtype, shape and bytes): the key of what is computed from these draws."""
        import dataclasses
        import hashlib

        digest = hashlib.sha256()
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                digest.update(repr((f.name, value.dtype.str, value.shape)).encode() + np.ascontiguousarray(value).tobytes())
            else:
                digest.update(repr((f.name, value)).encode())
        return digest.digest()

    def effect(self, project: str) -> np.ndarray:
        """A project's effect draws, (chain, draw)."""
        return self.theta[self.projects.index(project)]

    def subset(self, projects) -> DomainDraws:
        """The same draws restricted to ``projects`` (in the order given)."""
        index = [self.projects.index(p) for p in projects]
        pick = lambda values: tuple(values[i] for i in index) if values else ()  # noqa: E731
        return DomainDraws(self.domain, self.label, self.metric, self.beneficial, self.mid, self.scale, self.hdi_prob,
                           pick(self.projects), pick(self.designs), self.mu, self.tau, self.theta[index],
                           pick(self.raw), pick(self.raw_se))


def domain_draws(source) -> dict[str, DomainDraws]:
    """Per domain, the joint draws of a draw source (see the module docstring)."""
    if isinstance(source, Mapping) and all(isinstance(v, DomainDraws) for v in source.values()):
        return dict(source)
    if hasattr(source, "domain_draws"):
        return dict(source.domain_draws())
    if hasattr(source, "posterior") and hasattr(source, "directory"):  # a CachedFit
        source = source.posterior
    if hasattr(source, "attrs") and "metaeval_layout" in getattr(source, "attrs", {}):
        return _from_posterior(source)
    from metaeval.result import Result

    if isinstance(source, Result):
        raise TypeError("a Result holds summaries, not draws: pass the posterior (metaeval.fit(...), "
                        "metaeval.fit_cached(...).posterior) or another source of draws")
    raise TypeError(f"not a source of posterior draws: {type(source).__name__} (expected a posterior made by metaeval.fit, "
                    "a CachedFit, a mapping of DomainDraws, or an object with a domain_draws() method)")


def _from_posterior(posterior) -> dict[str, DomainDraws]:
    """The draws of a posterior made by :func:`metaeval.sampling.fit` (its layout says what is where)."""
    from metaeval.model import Layout

    layout = Layout.from_dict(json.loads(posterior.attrs["metaeval_layout"]))
    spec = json.loads(posterior.attrs.get("metaeval_spec", "{}"))
    hdi_prob = float(spec.get("hdi_prob", 0.95))
    post = posterior["posterior"].to_dataset()
    out = {}
    for meta in layout.domains:
        d = meta["id"]
        cells = [(j, p) for j, p in enumerate(layout.projects) if p["domain"] == d]
        theta = np.stack([np.asarray(post["theta_project"].isel(project=j).transpose("chain", "draw").values, dtype=float)
                          for j, _ in cells]) if cells else np.zeros((0, post.sizes["chain"], post.sizes["draw"]))
        out[d] = DomainDraws(
            domain=d, label=meta["label"], metric=meta["metric"], beneficial=meta["beneficial"], mid=meta["mid"],
            scale=float(meta["scale"]), hdi_prob=hdi_prob,
            projects=tuple(p["project"] for _, p in cells), designs=tuple("+".join(p["designs"]) for _, p in cells),
            mu=np.asarray(post["mu"].sel(domain=d).transpose("chain", "draw").values, dtype=float),
            tau=np.asarray(post["tau"].sel(domain=d).transpose("chain", "draw").values, dtype=float),
            theta=theta, raw=tuple(p["raw"] for _, p in cells), raw_se=tuple(p["raw_se"] for _, p in cells),
        )
    return out


def cached_posterior(evidence, spec, *, out: str | Path, settings=None):
    """The posterior of the cached fit for these inputs (read, never fitted), or None when there is none
    that can be trusted (the same lookup as :func:`metaeval.summary.cached_summary`)."""
    from metaeval.model import prepare
    from metaeval.sampling import SamplerSettings, cache_key, fit_dir, load_posterior, verify_fit

    layout = prepare(evidence, spec)
    key = cache_key(layout, spec, (settings or SamplerSettings()).resolved(spec, layout))
    directory = fit_dir(out, key)
    if not (directory / "posterior.nc").is_file() or verify_fit(directory, key) is not None:
        return None
    return load_posterior(directory / "posterior.nc")
