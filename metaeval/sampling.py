"""Sampling the model, the diagnostics gate, and the on-disk cache of fits.

``fit(model, ...)`` samples a model from ``metaeval.model.build_model`` and returns
the posterior as an ``xarray.DataTree`` (groups posterior, sample_stats,
observed_data, constant_data) with the model's layout and spec in its attributes,
so ``metaeval.summary.summarise`` needs nothing else. ``fit_cached`` keeps fits under
``<out>/fits/<key>/`` keyed by a hash of the evidence as it enters the model, the
model spec, the sampler settings, the seed and the library versions.

Sampler: nutpie (PyMC's default when installed) at the spec's target_accept
(0.995 in the bundled models). Measured on a 13-estimate fixture shaped like
the bundled evidence (2 shared cores, warm compile cache, 4 x (1000 + 1000),
target_accept 0.99, one process per fit): nutpie 13 s wall, the PyMC sampler
with the numba backend 25 s, with the C backend 36 s; most of nutpie's time was
compiling its two numba callbacks, which ``metaeval.compile_cache`` now keeps on disk
across processes (a fresh fit of the bundled evidence: 24 CPU-s before, 6 after).
Within a process a compiled sampler is reused for every model of the same structure
(``_sample_nutpie``), so a notebook refit with other data or prior values pays only
for sampling. ``sampler="pymc"`` remains an option (numba backend). Gate results over
seeds: ``bench/gate_results.json``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import sys
import threading
import types
import warnings
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import NamedTuple

from metaeval import interrupts
from metaeval.files import atomic_path, check_allowed, confine, inside, result_set, write_atomic
from metaeval.harmonise import evidence_digest
from metaeval.model import Layout, layout_of, spec_of
from metaeval.spec import ModelSpec

DEFAULT_SEED = 20261124
#: The diagnostics gate (Vehtari et al. 2021): every posterior variable.
RHAT_MAX = 1.01
ESS_MIN = 400
SAMPLERS = ("nutpie", "pymc")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplerSettings:
    """How to sample: chains, draws per chain, tuning steps, seed, sampler, target_accept."""

    chains: int = 4
    draws: int = 1000
    tune: int = 1000
    seed: int = DEFAULT_SEED
    sampler: str = "nutpie"
    target_accept: float | None = None  # None: the model spec's value

    def __post_init__(self) -> None:
        if self.chains < 1 or self.draws < 1 or self.tune < 0:
            raise ValueError("chains and draws must be at least 1, tune at least 0")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.target_accept is not None and not 0 < self.target_accept < 1:
            raise ValueError("target_accept must be in (0, 1)")

    def resolved(self, spec: ModelSpec | None, layout: Layout | None) -> SamplerSettings:
        """These settings with target_accept filled in from ``spec`` for the model of ``layout`` (0.99 without a spec;
        the spec's ``target_accept_integrated`` where the layout leaves no project effect to sample)."""
        if self.target_accept is not None:
            return self
        from dataclasses import replace

        from metaeval.model import samples_project_effects

        if spec is None:
            return replace(self, target_accept=0.99)
        return replace(self, target_accept=spec.target_accept_for(layout is None or samples_project_effects(layout, spec)))


def fit(
    model,
    *,
    chains: int = 4,
    draws: int = 1000,
    tune: int = 1000,
    seed: int = DEFAULT_SEED,
    sampler: str = "nutpie",
    target_accept: float | None = None,
    progress: bool | None = None,
):
    """Sample ``model`` and return the posterior DataTree.

    ``target_accept`` defaults to the model spec's (0.99: lower values left
    divergences in the feasibility check). ``progress`` shows a progress bar;
    by default only when stderr is a terminal. The same seed gives the same draws
    in the same environment, whether the compile cache was cold or warm (nutpie's
    callbacks always run as loaded from it: ``metaeval.compile_cache``).
    """
    import pymc as pm

    try:
        spec, layout = spec_of(model), layout_of(model)
    except ValueError:
        spec = layout = None
    settings = SamplerSettings(chains, draws, tune, seed, sampler, target_accept).resolved(spec, layout)
    if progress is None:
        progress = sys.stderr.isatty()
    try:
        if settings.sampler == "nutpie":
            posterior = _sample_nutpie(model, settings, bool(progress))
        else:
            with model:
                posterior = pm.sample(draws=settings.draws, tune=settings.tune, chains=settings.chains, cores=1, random_seed=settings.seed,
                                      nuts_sampler="pymc", nuts={"target_accept": settings.target_accept}, progressbar=bool(progress), quiet=not progress)
    except Exception as err:  # compilation, initial-point or sampler errors: a failure, never a result
        from metaeval.errors import SamplingFailed

        interrupts.check()  # a signal turned into an error on the way is still a signal
        raise SamplingFailed(f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else 'no message'}") from err
    interrupts.check()  # a sampler that returned its partial draws on a signal: no result
    import numpy as np

    try:
        layout = layout_of(model)
    except ValueError:
        layout = None
    if layout is not None and spec is not None and spec.effects == "marginal":
        from metaeval.model import draw_marginal_effects

        posterior = draw_marginal_effects(posterior, layout, spec, settings.seed)
    bad = [name for name, da in posterior["posterior"].to_dataset().data_vars.items() if not np.isfinite(np.asarray(da.values, dtype=float)).all()]
    if bad:
        from metaeval.errors import SamplingFailed

        raise SamplingFailed(f"non-finite draws (NaN or infinity) in {', '.join(bad)}; the model cannot be sampled on this evidence as it stands")
    return posterior if layout is None else annotate(posterior, layout, spec, settings)


# --- compiled samplers, reused within a process --------------------------------------------

class _Structure(NamedTuple):
    """A model's graph up to the values of its data: see ``_structure``."""

    signature: tuple
    outputs: list
    inputs: list
    data: list[str]  # names of the data containers whose values a reuse carries over


#: nutpie samplers compiled in this process, newest last: (structure, compiled sampler, template model).
_COMPILED: list[tuple[_Structure, object, object]] = []
_COMPILED_MAX = 8
_COMPILED_LOCK = threading.Lock()


def _structure(model) -> _Structure | None:
    """What identifies a model's compiled sampler up to its data, or None when it cannot be reused.

    The log density and deterministics written in the model's value variables and
    ``pm.Data`` containers, those inputs, the containers' names, and a cheap signature
    (their names, types and data shapes) to filter candidates before comparing graphs. A graph
    that reads a shared variable which is not one of the model's named data containers is
    not reused: its value could not be carried over.
    """
    from pytensor.compile.sharedvalue import SharedVariable
    from pytensor.graph.traversal import graph_inputs

    outputs = [model.logp(), *model.replace_rvs_by_values(model.deterministics)]
    shared = [v for v in graph_inputs(outputs) if isinstance(v, SharedVariable)]
    dims = {v for v in shared if model.dim_lengths.get(v.name) is v}
    data = sorted((v for v in shared if v not in dims), key=lambda v: v.name or "")
    names = [v.name for v in data]
    if len(set(names)) != len(names) or any(name is None or model.named_vars.get(name) is not v for name, v in zip(names, data)):
        return None
    signature = (
        tuple((v.name, str(v.type)) for v in model.value_vars),
        tuple(sorted((v.name, int(v.get_value())) for v in dims)),
        tuple((v.name, str(v.type), v.get_value(borrow=True).shape) for v in data),
        tuple(d.name for d in model.deterministics),
    )
    return _Structure(signature, outputs, [*model.value_vars, *sorted(dims, key=lambda v: v.name), *data], names)


def _import_what_follows() -> None:
    """Import what follows sampling (ArviZ's converters and diagnostics, the netCDF writer) while the model compiles in
    other processes and this one waits: about 0.8 s of a first fit off the path (0.5 s of it scipy.stats, which
    arviz_stats imports); and, in a thread, while the chains run (``fit --refit`` of the bundled evidence 5.45 ->
    5.15 s, medians of 5: the imports take their turn beside the sampler's threads)."""
    import arviz_base  # noqa: F401
    import arviz_stats  # noqa: F401
    import netCDF4  # noqa: F401


def _import_quietly() -> None:
    """:func:`_import_what_follows` in a thread of its own: an import that fails there is tried again where it is
    needed, and fails there with its message, not with a thread's traceback."""
    try:
        _import_what_follows()
    except BaseException:  # noqa: BLE001, S110 - see the docstring
        pass


def _sample_nutpie(model, settings: SamplerSettings, progress: bool):
    """Sample with nutpie, compiling the model once per structure in this process (and loading it from disk).

    A model equal to an earlier one up to the values of its data containers (the same
    evidence shape and prior families, say, with other estimates or prior scales) reuses
    that model's compiled sampler with the new data, so a notebook refit skips the
    compilation that dominates a fit. Draws are the same as from a fresh compilation: the
    template's initial-point function is given the new data while the chains start.
    """
    import time

    from pymc.backends.arviz import patch_nutpie_idata
    from pytensor.graph.basic import equal_computations

    from metaeval.compile_cache import compile_model

    nutpie = _import_nutpie()

    structure = _structure(model)
    with _COMPILED_LOCK:
        entry = None
        if structure is not None:
            entry = next((e for e in _COMPILED if e[0].signature == structure.signature
                          and equal_computations(e[0].outputs, structure.outputs, e[0].inputs, structure.inputs)), None)
        if entry is None:
            compiled, template, values = compile_model(model, meanwhile=_import_what_follows), model, {}
            if structure is not None:
                _COMPILED.append((structure, compiled, model))
                del _COMPILED[:-_COMPILED_MAX]
        else:
            _, reusable, template = entry
            values = {name: model[name].get_value() for name in structure.data}
            compiled = reusable.with_data(**values)
        saved = {name: template[name].get_value() for name in values}
        for name, value in values.items():
            template[name].set_value(value)
        try:
            importing = threading.Thread(target=_import_quietly, name="metaeval-imports", daemon=True)
            importing.start()  # while the chains run (a compile-cache hit imported nothing meanwhile)
            start = time.time()
            log.info("sampling: %d chains of %d + %d draws", settings.chains, max(settings.tune, 1), settings.draws)
            posterior = nutpie.sample(compiled, draws=settings.draws, tune=max(settings.tune, 1),  # nuts-rs needs one tuning step
                                      chains=settings.chains, seed=settings.seed, target_accept=settings.target_accept,
                                      save_warmup=False, progress_bar=progress,
                                      progress_callback=None if progress else _ProgressLog(), progress_rate=500)
            elapsed = time.time() - start
        finally:
            for name, value in saved.items():
                template[name].set_value(value)
    patch_nutpie_idata(posterior, model, sampling_time=elapsed)
    if template is not model:  # the compiled sampler carries the template's labels
        for group in ("posterior", "sample_stats"):
            ds = posterior[group].to_dataset()
            posterior[group] = ds.assign_coords({dim: list(model.coords[dim]) for dim in ds.dims if dim in model.coords})
    return posterior


class _ProgressLog:
    """nutpie's progress as log lines, a tenth of the draws apart: the phase messages of a run without a terminal."""

    def __init__(self) -> None:
        self.logged = 0

    def __call__(self, chains) -> None:
        done, total = sum(c.finished_draws for c in chains), sum(c.total_draws for c in chains)
        tenth = 10 * done // max(total, 1)
        if tenth > self.logged:
            self.logged = tenth
            log.info("sampling: %d of %d draws", done, total)


class _ArviZStandIn(types.ModuleType):
    """What ``import arviz`` gives nutpie: names from arviz_stats or arviz_base, the whole of arviz only for others.

    The real ``arviz`` namespace star-imports arviz_base, arviz_stats and arviz_plots, in that order;
    the last pulls in matplotlib (0.6 s of a fresh fit) and nutpie needs only arviz_base's converters.
    """

    def __getattr__(self, name: str):
        import importlib

        if not name.startswith("_"):
            for source in ("arviz_stats", "arviz_base"):  # the later star import wins in arviz's namespace
                module = importlib.import_module(source)
                if hasattr(module, name):
                    return getattr(module, name)
        return getattr(importlib.import_module("arviz"), name)


def _import_nutpie():
    """nutpie, whose module-level ``import arviz`` gets the stand-in above (only while nutpie is imported)."""
    if "nutpie" not in sys.modules and "arviz" not in sys.modules:
        stand_in = sys.modules["arviz"] = _ArviZStandIn("arviz")
        try:
            import nutpie  # noqa: F401
        finally:
            if sys.modules.get("arviz") is stand_in:
                del sys.modules["arviz"]
    import nutpie

    return nutpie


def annotate(posterior, layout: Layout, spec: ModelSpec | None, settings: SamplerSettings):
    """Store what ``summarise`` needs with a posterior (layout, spec, settings, seed) and label projects by id and domain."""
    post = posterior["posterior"].to_dataset()
    if "project" in post.dims:
        post = post.assign_coords(
            project_id=("project", [p["project"] for p in layout.projects]),
            project_domain=("project", [p["domain"] for p in layout.projects]),
        )
        posterior["posterior"] = post
    posterior.attrs["metaeval_layout"] = json.dumps(layout.to_dict(), sort_keys=True)
    if spec is not None:
        posterior.attrs["metaeval_spec"] = json.dumps(spec.to_dict(), sort_keys=True)
    posterior.attrs["metaeval_settings"] = json.dumps(asdict(settings), sort_keys=True)
    posterior.attrs["metaeval_seed"] = int(settings.seed)
    posterior.attrs["metaeval_versions"] = json.dumps(package_versions(), sort_keys=True)
    return posterior


def diagnose(posterior) -> dict:
    """The diagnostics gate over every posterior variable: R-hat, bulk/tail ESS, divergences.

    Returns rhat_max, ess_bulk_min, ess_tail_min, divergences, passed and, when
    the gate fails, ``failures``: one plain sentence per failed criterion naming
    the worst variable.
    """
    import arviz_stats as azs  # not arviz: that imports arviz_plots and matplotlib as well
    import numpy as np

    def extreme(ds, pick):
        best_value, best_name = None, None
        for name, da in ds.data_vars.items():
            values = np.asarray(da.values, dtype=float)
            finite = np.isfinite(values)  # a variable constant across draws has no R-hat / ESS
            if not finite.any():
                continue
            flat = np.where(finite, values, np.nan).ravel()
            i = int(np.nanargmax(flat) if pick == "max" else np.nanargmin(flat))
            value = float(flat[i])
            if best_value is None or (value > best_value if pick == "max" else value < best_value):
                index = np.unravel_index(i, values.shape)
                labels = [str(da.coords[d].values[j]) for d, j in zip(da.dims, index)]
                best_value, best_name = value, name + (f"[{', '.join(labels)}]" if labels else "")
        return best_value, best_name

    post = posterior["posterior"].to_dataset()
    with warnings.catch_warnings():  # constant variables give NaN, handled above
        warnings.simplefilter("ignore", RuntimeWarning)
        rhat, rhat_at = extreme(azs.rhat(post), "max")
        ess_bulk, bulk_at = extreme(azs.ess(post, method="bulk"), "min")
        ess_tail, tail_at = extreme(azs.ess(post, method="tail"), "min")
    divergences = int(posterior["sample_stats"]["diverging"].sum()) if "diverging" in posterior["sample_stats"] else 0
    failures = []
    if rhat is None or rhat > RHAT_MAX:
        failures.append(f"R-hat {rhat:.3f} for {rhat_at} is above {RHAT_MAX}" if rhat is not None else "R-hat could not be computed")
    if ess_bulk is None or ess_bulk < ESS_MIN:
        failures.append(f"bulk ESS {ess_bulk:.0f} for {bulk_at} is below {ESS_MIN}" if ess_bulk is not None else "bulk ESS could not be computed")
    if ess_tail is None or ess_tail < ESS_MIN:
        failures.append(f"tail ESS {ess_tail:.0f} for {tail_at} is below {ESS_MIN}" if ess_tail is not None else "tail ESS could not be computed")
    if divergences:
        failures.append(f"{divergences} divergent transition(s)")
    return {
        "rhat_max": rhat,
        "ess_bulk_min": ess_bulk,
        "ess_tail_min": ess_tail,
        "divergences": divergences,
        "passed": not failures,
        "failures": failures,
        "thresholds": {"rhat_max": RHAT_MAX, "ess_min": ESS_MIN, "divergences": 0},
    }


# --- the cache ---------------------------------------------------------------------------


@functools.cache
def _installed(package: str) -> str:
    """The installed version of ``package`` ("unknown" if it is not installed), looked up once a process:
    each lookup scans every folder on sys.path (0.1 s a time; 1 s of a report from a cached fit)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def _versions() -> dict[str, str]:
    return {package: _installed(package) for package in ("metaeval", "pymc", "pytensor", "nutpie", "numpy")}


def package_versions() -> dict[str, str]:
    """Python and the packages a result depends on, recorded in every summary (``provenance``)."""
    import platform

    packages = ("metaeval", "pymc", "pytensor", "nutpie", "arviz", "numpy", "scipy", "pandas", "xarray")
    return {"python": platform.python_version(), **{package: _installed(package) for package in packages}}


def cache_key(layout: Layout, spec: ModelSpec, settings: SamplerSettings) -> str:
    """Hash of what determines a fit: the evidence as it enters, spec, settings, seed, versions."""
    content = {
        "layout": layout.to_dict(),
        "spec": spec.to_dict(),
        "settings": asdict(settings.resolved(spec, layout)),
        "versions": _versions(),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:20]


def fit_dir(out: str | Path, key: str) -> Path:
    """Where the fit of ``key`` is found: ``<out>/fits/<key>``, a pointer to its current version (:func:`metaeval.files.result_set`)."""
    return Path(out) / "fits" / key


def write_posterior(posterior, path: str | Path) -> None:
    """Save the posterior as netCDF, atomically."""
    with atomic_path(path) as tmp:
        posterior.to_netcdf(tmp, engine="netcdf4")


def load_posterior(path: str | Path):
    """Read a saved posterior back as a DataTree (fully loaded, file closed)."""
    import xarray as xr

    tree = xr.open_datatree(str(path), engine="netcdf4")
    loaded = tree.load()
    tree.close()
    return loaded


@dataclass
class CachedFit:
    """A fit on disk: its folder, key, whether it was reused, and the posterior (read on first use)."""

    key: str
    directory: Path
    cached: bool
    _posterior: object = None
    diagnostics: dict | None = None  # the gate, when this call fitted

    @property
    def posterior(self):
        if self._posterior is None:
            self._posterior = load_posterior(self.directory / "posterior.nc")
        return self._posterior


def fit_cached(evidence, spec: ModelSpec, *, out: str | Path, settings: SamplerSettings | None = None, refit: bool = False, progress: bool | None = None) -> CachedFit:
    """Fit unless ``<out>/fits/<key>`` holds a trusted fit for the same inputs (:func:`verify_fit`).

    A new fit is written as one set (posterior.nc and fit.json, :func:`metaeval.files.result_set`) and
    switched in only when complete: a good fit is never removed before its replacement is whole (``refit``),
    and a damaged entry (say, a directory where posterior.nc should be) is set aside and fitted again. Every
    write stays inside ``out`` after symlinks are followed, in whichever process (a Dask worker) this runs.
    """
    from metaeval.model import model_from_layout, prepare

    check_magnitudes(evidence)
    layout = prepare(evidence, spec)
    settings = (settings or SamplerSettings()).resolved(spec, layout)
    key = cache_key(layout, spec, settings)
    directory = fit_dir(out, key)
    with confine(out):
        if os.path.lexists(directory) and not refit:
            problem = verify_fit(directory, key)
            if problem is None:
                return CachedFit(key, directory, True)
            log.warning("the cached fit in %s cannot be trusted (%s); fitting again", directory, problem)
        check_allowed(directory.parent, folder=True)  # before the fit, not after it: a link out of `out` is refused
        model = model_from_layout(layout, spec)
        posterior = fit(model, chains=settings.chains, draws=settings.draws, tune=settings.tune, seed=settings.seed, sampler=settings.sampler,
                        target_accept=settings.target_accept, progress=progress)
        posterior.attrs["metaeval_evidence_sha256"] = evidence_digest(evidence)
        log.info("writing the fit to %s", directory)
        with result_set(directory) as staging:
            write_posterior(posterior, staging / "posterior.nc")
            record = {"key": key, "settings": asdict(settings), "versions": _versions(), "spec": spec.to_dict(), "diagnostics": diagnose(posterior),
                      "posterior_sha256": file_sha256(staging / "posterior.nc"), "evidence_sha256": posterior.attrs["metaeval_evidence_sha256"],
                      "model_sha256": spec.digest()}
            write_atomic(staging / "fit.json", json.dumps(record, sort_keys=True, indent=2) + "\n")
    return CachedFit(key, directory, False, posterior, record["diagnostics"])


#: The largest estimate or SE (and the inverse of the smallest SE) the sampler is given.
MAGNITUDE_MAX = 1e150


def check_magnitudes(evidence) -> None:
    """Refuse, per domain, estimates and SEs too far from the domain's median SE to sample with, or whose squares do
    not fit in double precision (InputError naming file, record and field): the exact engine's rule
    (:func:`metaeval.tau_grid.scale_problems`) and the unscaled engines' limit (the sampler, ``classic``). Without it an
    SE of 1e-300 or 1e300 ended in ZeroDivisionError or OverflowError while the model was built, and ``classic``
    printed null estimates with exit 0."""
    from metaeval.errors import InputError, Problem
    from metaeval.tau_grid import scale_problems

    rows = evidence[evidence["poolable"].astype(bool) & ~evidence["direction_only"].astype(bool)] if len(evidence) else evidence
    problems = []
    for _, group in rows.groupby("domain", sort=True):
        ids = [str(x) for x in group["estimate_id"]]
        found = scale_problems(group["yi"], group["sei"], ids)
        for i, (se, estimate) in enumerate(zip(group["sei"], group["yi"])):  # the sampler works unscaled: squares must fit
            for field, value in (("sei", se), ("yi", estimate)):
                if abs(value) > MAGNITUDE_MAX or (field == "sei" and value < 1 / MAGNITUDE_MAX):
                    found.append((i, field, f"{value:g} is beyond 1e±150, where its square does not fit in double precision; "
                                            "express the effect in other units (`fit --engine exact` rescales)"))
        for i, field, why in found:
            row = group.iloc[i]
            problems.append(Problem(str(row.get("file") or "evidence"), str(row.get("record") or ids[i]), field, why))
    if problems:
        raise InputError(problems)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_fit_record(directory: str | Path) -> dict | None:
    """``fit.json`` of a cached fit, or None when it is missing, unreadable or not a record."""
    from metaeval.files import read_json_object

    return read_json_object(Path(directory) / "fit.json", 16 * 2**20)


def verify_fit(directory: str | Path, key: str) -> str | None:
    """Why the cached posterior in ``directory`` cannot be trusted, or None when it matches its recorded hash.

    Not trusted either: an entry that leads out of its folder (a symlink put there by hand), or anything
    but a regular file where posterior.nc should be.
    """
    directory = Path(directory)
    if not inside(directory, directory.parent, folder=True):
        return f"it leads to {directory.resolve()}, outside {directory.parent}"
    if not (directory / "posterior.nc").is_file():
        return "posterior.nc is missing or not a regular file"
    record = read_fit_record(directory)
    if record is None:
        return "fit.json is missing or unreadable"
    if record.get("key") != key:
        return f"fit.json belongs to key {record.get('key')!r}, not {key!r}"
    try:
        actual = file_sha256(Path(directory) / "posterior.nc")
    except OSError as err:
        return f"posterior.nc cannot be read: {err.strerror}"
    if record.get("posterior_sha256") != actual:
        return "posterior.nc does not match the hash recorded in fit.json (corrupt, truncated or stale)"
    return None
