"""Which initiative does more? Pairwise comparisons and rankings per domain, from joint posterior draws.

``compare(source, ...)`` reads the draws of a fit (:mod:`metaeval.draws`) and gives, per outcome
domain, on the bias-adjusted project effects (the model's ``theta_project``):

- P(A better than B) for every ordered pair, "better" in the domain's beneficial direction
  (P(A>B) + P(B>A) = 1 up to ties, which continuous draws do not have);
- the posterior of the difference A − B, signed so that positive means A does more good;
- per project P(best) (they sum to 1), the expected rank (1 = best), its SD and interval, and
  the probability of each rank;
- plain sentences on the largest differences and on the likely best, which also say when the
  order rests on the design-bias assumptions: given draws of the same evidence under another
  bias model (``reference``, e.g. ``no_bias``), a pair whose order flips there is named as such.

Given the exact engine's result for the same draws (``integrated``), P(best) and P(A better than B) are the
engine's, integrated rather than counted in draws, wherever it has them: a report then shows one number for each
(the draws' count differed from it by Monte Carlo error, 55% beside 54%). Ranks and differences still come from
the draws.

The numerical core (``pairwise_probabilities``, ``rank_draws``) knows nothing of domains.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from metaeval import words
from metaeval.draws import DomainDraws, domain_draws
from metaeval.errors import InputError, Problem
from metaeval.kept import kept, key_of
from metaeval.result import DomainResult, Frozen, Result

#: How many of the largest differences per domain get a sentence.
N_SENTENCES = 3
#: A change of P(A better) this large under the reference model is reported even when the order holds.
MATERIAL_CHANGE = 0.2
#: An order "flips" only where at least one of the two models tells the pair apart: P(A better) this far from 1/2.
CLEAR = 0.1


# ---------------------------------------------------------------------------- the numerical core


#: Elements of the (rows, rows, draws) comparisons formed at once: 180 projects a domain made them 130 million.
_BLOCK = 2**24


def pairwise_probabilities(values: np.ndarray) -> np.ndarray:
    """``P[i, j]`` = share of draws where ``values[i] > values[j]`` (values: (k, n); the diagonal is 0), a few rows
    ``i`` at a time (:data:`_BLOCK`)."""
    values = np.asarray(values, dtype=float)
    k, n = values.shape
    out = np.empty((k, k))
    step = max(1, _BLOCK // max(k * n, 1))
    for i in range(0, k, step):
        out[i:i + step] = (values[i:i + step, None, :] > values[None, :, :]).mean(axis=-1)
    return out


def rank_draws(values: np.ndarray) -> np.ndarray:
    """Per draw, each row's rank among the rows (1 = largest): (k, n) integers.

    Ties (which continuous draws do not have) go to the row listed first, so each draw's
    ranks are a permutation of 1..k and P(rank 1) sums to one over the rows. By a stable sort
    per draw (k log k a draw, where counting the rows above took k^2 of time and memory).
    """
    values = np.asarray(values, dtype=float)
    order = np.argsort(-values, axis=0, kind="stable")  # per draw, the rows from the largest; ties in listed order
    ranks = np.empty(values.shape, dtype=np.int64)
    np.put_along_axis(ranks, order, np.arange(1, values.shape[0] + 1)[:, None], axis=0)
    return ranks


# ---------------------------------------------------------------------------- the typed result


class Difference(Frozen):
    """A − B in the beneficial direction (positive: A does more good), its posterior and P(A better)."""

    a: str
    b: str
    p_a_better: float = Field(ge=0, le=1)
    mean: float
    hdi_low: float
    hdi_high: float
    p_a_better_reference: float | None = Field(None, ge=0, le=1, description="P(A better) under the reference bias model")


class Rank(Frozen):
    """One project's place in its domain: P(best), the expected rank (1 = best) and its uncertainty."""

    project: str
    design: str
    p_best: float = Field(ge=0, le=1)
    expected_rank: float
    rank_sd: float
    rank_low: int = Field(description="lower end of the central interval of the rank (hdi_prob)")
    rank_high: int
    p_rank: tuple[float, ...] = Field(description="P(rank = 1), P(rank = 2), ... in the draws (where P(best) is integrated, "
                                                  "P(rank = 1) is the draws' estimate of it)")
    p_best_reference: float | None = None


class DomainComparison(Frozen):
    """The comparison of the projects of one domain."""

    domain: str
    label: str
    metric: str | None
    beneficial: Literal["increase", "decrease"]
    hdi_prob: float
    n_draws: int
    projects: tuple[str, ...]
    pairwise: dict[str, dict[str, float]] = Field(description="pairwise[a][b] = P(a's effect is better than b's)")
    differences: tuple[Difference, ...] = Field(description="every unordered pair once, the larger mean difference first")
    ranks: tuple[Rank, ...] = Field(description="best expected rank first")
    sentences: tuple[str, ...]
    reference: str | None = Field(None, description="the bias model the order was checked against")
    flips: tuple[tuple[str, str], ...] = Field((), description="pairs (a, b) whose order flips under the reference model")
    integrated: bool = Field(False, description="P(best) and the pairwise probabilities are the exact engine's (integrated), not "
                                                "counted in the draws; ranks and differences come from the draws")


class Comparison(Frozen):
    """Pairwise comparisons and rankings for every domain compared, and the domains that were not."""

    domains: dict[str, DomainComparison]
    skipped: dict[str, str] = Field(description="domain -> why it was not compared")
    reference: str | None = None

    def to_json(self) -> str:
        from metaeval.present import to_json

        return to_json(self.model_dump(mode="json"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Comparison:
        return cls.model_validate_json(text)

    def to_frame(self):
        """A long table: one row per ordered pair (kind "pair") and per project's rank (kind "rank")."""
        import pandas as pd

        rows = []
        for d, dc in self.domains.items():
            diffs = {(x.a, x.b): x for x in dc.differences}
            for a, others in dc.pairwise.items():
                for b, p in others.items():
                    diff = diffs.get((a, b))
                    mirror = diffs.get((b, a))
                    mean = diff.mean if diff else -mirror.mean
                    low, high = (diff.hdi_low, diff.hdi_high) if diff else (-mirror.hdi_high, -mirror.hdi_low)
                    ref = diff.p_a_better_reference if diff else (None if mirror.p_a_better_reference is None else 1 - mirror.p_a_better_reference)
                    rows.append({"domain": d, "kind": "pair", "project": a, "other": b, "p_better": p, "difference": mean,
                                 "difference_low": low, "difference_high": high, "p_better_reference": ref})
            for r in dc.ranks:
                rows.append({"domain": d, "kind": "rank", "project": r.project, "p_best": r.p_best, "expected_rank": r.expected_rank,
                             "rank_sd": r.rank_sd, "rank_low": r.rank_low, "rank_high": r.rank_high, "p_best_reference": r.p_best_reference})
        columns = ["domain", "kind", "project", "other", "p_better", "difference", "difference_low", "difference_high",
                   "p_better_reference", "p_best", "expected_rank", "rank_sd", "rank_low", "rank_high", "p_best_reference"]
        return pd.DataFrame(rows, columns=columns)


# ---------------------------------------------------------------------------- the API


def compare(
    source,
    *,
    domain: str | Sequence[str] | None = None,
    projects: Sequence[str] | None = None,
    reference=None,
    reference_label: str = "no_bias",
    names: Mapping[str, str] | None = None,
    cache: str | Path | None = None,
    integrated: Result | None = None,
) -> Comparison:
    """Compare the projects of each domain on their bias-adjusted effects (see the module docstring).

    ``source``: a fit's draws (a posterior from ``metaeval.fit``, a ``CachedFit``, or anything
    :func:`metaeval.draws.domain_draws` accepts). ``domain``: one domain or several (default: all).
    ``projects``: compare only these (P(best) and ranks are then among them). ``reference``: draws of
    the same evidence under another bias model (``reference_label``), to say where the order rests on
    the bias assumptions. ``names``: readable project names for the sentences (default: the ids). ``cache``: a
    folder where the comparison is kept under a hash of everything it is computed from and found again
    (:func:`metaeval.kept.kept`; a report made again from the same fit needs the same comparison). ``integrated``: the
    result the draws come from; where it is the exact engine's, its P(best) and pairwise probabilities are used
    (see the module docstring).

    Raises :class:`~metaeval.errors.InputError` for a domain or project the fit does not have.
    """
    draws = domain_draws(source)
    ref = domain_draws(reference) if reference is not None else {}
    wanted = _selected_domains(draws, domain)
    if projects is not None:
        projects = [str(p) for p in projects]
        known = sorted({p for d in wanted for p in draws[d].projects})
        unknown = [p for p in projects if p not in known]
        if unknown:
            raise InputError(Problem("command line", "", "--projects", f"no project {', '.join(map(repr, unknown))} in "
                                     f"{'the domain(s) compared' if domain else 'the fit'}; projects: {', '.join(known) or 'none'}"))
    exact = {d: integrated.domains[d] for d in wanted if d in integrated.domains} if integrated is not None and integrated.engine == "exact" else {}
    return kept(cache, lambda: comparison_key(draws, ref, wanted, projects, reference_label, names, exact), Comparison,
                lambda: _compare(draws, ref, wanted, projects, reference_label, names, exact))


def comparison_key(draws: Mapping[str, DomainDraws], reference: Mapping[str, DomainDraws], wanted: Sequence[str], projects,
                   reference_label: str, names, exact: Mapping[str, DomainResult] | None = None) -> str:
    """A hash of what :func:`compare` computes a comparison from: the draws, the options, the exact engine's
    probabilities, NumPy's and ArviZ's versions and metaeval's own code."""
    from importlib import metadata

    integrated = sorted((d, [(p.key, p.p_best) for p in r.projects], sorted((a, sorted(b.items())) for a, b in r.pairwise.items()))
                        for d, r in (exact or {}).items())
    return key_of(("comparison", list(wanted), projects, reference_label, sorted((names or {}).items()), integrated, np.__version__,
                   metadata.version("arviz-stats")),
               (f"{label}:{name}".encode() + b"\0" + source[name].digest() for label, source in (("draws", draws), ("reference", reference))
                for name in sorted(source)))


def _compare(draws: Mapping[str, DomainDraws], ref: Mapping[str, DomainDraws], wanted: Sequence[str], projects, reference_label: str,
             names, exact: Mapping[str, DomainResult]) -> Comparison:
    """:func:`compare`'s work, its options checked."""
    out, skipped = {}, {}
    for d in wanted:
        dd = draws[d]
        keep = [p for p in dd.projects if projects is None or p in projects]
        if len(keep) < 2:
            skipped[d] = ("only one project" if len(keep) == 1 else "no project") + (" of those named" if projects is not None else "") + \
                " has an effect in this domain: nothing to compare"
            continue
        other = ref.get(d)
        if other is not None and not set(keep) <= set(other.projects):
            other = None
        out[d] = compare_domain(dd.subset(keep), other.subset(keep) if other is not None else None,
                                reference_label if other is not None else None, names or {}, exact.get(d))
    return Comparison(domains=out, skipped=skipped, reference=reference_label if ref else None)


def _selected_domains(draws: Mapping[str, DomainDraws], domain) -> list[str]:
    if domain is None:
        return list(draws)
    wanted = [domain] if isinstance(domain, str) else list(domain)
    unknown = [d for d in wanted if d not in draws]
    if unknown:
        raise InputError(Problem("command line", "", "--domain", f"no domain {', '.join(map(repr, unknown))} in the fit; "
                                 f"domains: {', '.join(draws) or 'none'}"))
    return wanted


def compare_domain(dd: DomainDraws, reference: DomainDraws | None = None, reference_label: str | None = None,
                   names: Mapping[str, str] | None = None, integrated: DomainResult | None = None) -> DomainComparison:
    """The comparison of one domain's projects (all of ``dd.projects``); ``integrated``: the exact engine's result for
    the domain, whose P(best) (where it is among these projects) and pairwise probabilities are taken over."""
    from metaeval.result import round_significant

    names = names or {}
    good = dd.sign * dd.theta.reshape(len(dd.projects), -1)  # larger = more beneficial
    p_exact, best_exact = _integrated(integrated, dd.projects)
    p = p_exact if p_exact is not None else pairwise_probabilities(good)  # the draws' count only where the engine has none
    p_ref = pairwise_probabilities(reference.sign * reference.theta.reshape(len(reference.projects), -1)) if reference is not None else None
    k = len(dd.projects)
    pairwise = {a: {b: round_significant(p[i, j]) for j, b in enumerate(dd.projects) if j != i} for i, a in enumerate(dd.projects)}

    means = [row.mean() for row in good]
    pairs = [(i, j) if means[i] >= means[j] else (j, i) for i in range(k) for j in range(i + 1, k)]  # the one doing more good first
    differences = []
    step = max(1, _BLOCK // 4 // max(good.shape[1], 1))  # pairs' differences at a time
    for start in range(0, len(pairs), step):
        a_of, b_of = (np.array(side, dtype=int) for side in zip(*pairs[start:start + step]))
        diff = good[a_of] - good[b_of]
        bounds, mean = hdi(diff, dd.hdi_prob), diff.mean(axis=1)  # each row's mean as row.mean() gives it, bit for bit
        for r, (a, b) in enumerate(zip(a_of, b_of)):
            differences.append(Difference(a=dd.projects[a], b=dd.projects[b], p_a_better=round_significant(p[a, b]),
                                          mean=round_significant(mean[r]), hdi_low=round_significant(bounds[r, 0]),
                                          hdi_high=round_significant(bounds[r, 1]),
                                          p_a_better_reference=None if p_ref is None else round_significant(p_ref[a, b])))
    differences.sort(key=lambda x: (-x.mean, x.a, x.b))

    ranks = rank_draws(good)
    best_ref = (rank_draws(reference.sign * reference.theta.reshape(k, -1)) == 1).mean(axis=1) if reference is not None else None
    tail = (1 - dd.hdi_prob) / 2
    rank_rows = []
    for i, project in enumerate(dd.projects):
        r = ranks[i]
        counts = np.bincount(r, minlength=k + 1)[1:] / r.size
        p_best = counts[0] if best_exact is None else best_exact[i]
        rank_rows.append(Rank(project=project, design=dd.designs[i], p_best=round_significant(p_best), expected_rank=round_significant(r.mean()),
                              rank_sd=round_significant(r.std(ddof=1)), rank_low=int(np.quantile(r, tail, method="inverted_cdf")),
                              rank_high=int(np.quantile(r, 1 - tail, method="inverted_cdf")),
                              p_rank=tuple(round_significant(c) for c in counts),
                              p_best_reference=None if best_ref is None else round_significant(best_ref[i])))
    rank_rows.sort(key=lambda r: (r.expected_rank, r.project))
    flips = tuple((x.a, x.b) for x in differences if x.p_a_better_reference is not None and flipped(x.p_a_better, x.p_a_better_reference))
    return DomainComparison(
        domain=dd.domain, label=dd.label, metric=dd.metric, beneficial=dd.beneficial, hdi_prob=dd.hdi_prob, n_draws=dd.n_draws,
        projects=dd.projects, pairwise=pairwise, differences=tuple(differences), ranks=tuple(rank_rows),
        sentences=tuple(_sentences(dd, differences, rank_rows, reference_label, names)),
        reference=reference_label, flips=flips, integrated=p_exact is not None or best_exact is not None,
    )


def _integrated(result: DomainResult | None, projects: Sequence[str]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The exact engine's pairwise probabilities among ``projects`` (P[i, j] = P(i better than j)) and their P(best), each
    None where it does not have them: pairwise beyond its limit of projects; P(best) when it is among other projects
    (``compare --projects``, or an effect per estimate)."""
    if result is None:
        return None, None
    table = result.pairwise
    pairs = None
    if all(b in table.get(a, {}) for a in projects for b in projects if a != b):
        pairs = np.array([[table[a][b] if a != b else 0.0 for b in projects] for a in projects])
    best = {p.key: p.p_best for p in result.projects}
    same = set(best) == set(projects) and None not in best.values()
    return pairs, np.array([best[p] for p in projects]) if same else None


def flipped(p: float, q: float) -> bool:
    """Whether P(A better) ``p`` under one model and ``q`` under another put A and B in opposite order, with at
    least one of them telling the two apart (P at least :data:`CLEAR` from 1/2): 51% against 49% is no flip."""
    return (p - 0.5) * (q - 0.5) < 0 and max(abs(p - 0.5), abs(q - 0.5)) >= CLEAR


def hdi(values: np.ndarray, prob: float) -> np.ndarray:
    """The highest-density interval of each row of draws (ArviZ's, on the NumPy array; the same as row by row, in
    one call): (rows, 2)."""
    from arviz_stats.base import array_stats

    return np.asarray(array_stats.hdi(np.asarray(values, dtype=float), prob=prob, axis=-1)).reshape(-1, 2)


# ---------------------------------------------------------------------------- in words


def _sentences(dd: DomainDraws, differences: list[Difference], ranks: list[Rank], reference: str | None,
               names: Mapping[str, str]) -> list[str]:
    """The likely best, then the largest differences, each saying whether the bias assumptions decide it."""
    name = lambda p: names.get(p, p)  # noqa: E731
    metric = dd.metric
    unit = f" {words.unit_short(metric)}" if words.unit_short(metric) else ""
    better = "higher" if dd.beneficial == "increase" else "lower"
    out = []
    top = max(ranks, key=lambda r: (r.p_best, -r.expected_rank))
    lead = "Most likely the best" if top.p_best >= 0.5 else "No initiative is clearly the best; the most likely"
    sentence = (f"{lead} in {dd.label}: {name(top.project)} (P(best) {words.probability(top.p_best)}, expected rank "
                f"{top.expected_rank:.1f} of {len(ranks)}).")
    if top.p_best_reference is not None:
        ref_top = max(ranks, key=lambda r: (r.p_best_reference, -r.expected_rank))
        if ref_top.project != top.project and max(top.p_best, ref_top.p_best_reference) >= 0.5:
            sentence += (f" Without the design-bias adjustment ({reference}) it would be {name(ref_top.project)} "
                         f"(P(best) {words.probability(ref_top.p_best_reference)}): the ranking rests on the bias assumptions.")
    out.append(sentence)
    for x in differences[:N_SENTENCES]:
        sentence = (f"{name(x.a)} {_likelihood(x.p_a_better)} {name(x.b)} ({better} is better here): "
                    f"a difference of {words.number(x.mean, metric)}{unit} on average ({100 * dd.hdi_prob:g}% interval "
                    f"{words.interval(x.hdi_low, x.hdi_high, metric)}), P({name(x.a)} better) {words.probability(x.p_a_better)}.")
        if x.p_a_better_reference is not None:
            q = x.p_a_better_reference
            if flipped(x.p_a_better, q):
                sentence += (f" The order flips without the design-bias adjustment ({reference}: P {words.probability(q)}): "
                             "it is driven by the bias assumptions.")
            elif (x.p_a_better - 0.5) * (q - 0.5) < 0:
                sentence += f" Without the design-bias adjustment ({reference}: P {words.probability(q)}) they cannot be told apart either."
            elif abs(q - x.p_a_better) >= MATERIAL_CHANGE:
                sentence += f" Without the design-bias adjustment ({reference}) P is {words.probability(q)}: the bias assumptions matter here."
            else:
                sentence += f" The order holds without the design-bias adjustment ({reference}: P {words.probability(q)})."
        out.append(sentence)
    return out


def _likelihood(p: float) -> str:
    """How sure it is that the first of a pair does more good than the second, in words."""
    for threshold, text in ((0.975, "almost certainly does more good than"), (0.9, "very likely does more good than"),
                            (0.75, "probably does more good than")):
        if p >= threshold:
            return text
    return "cannot be told apart from"
