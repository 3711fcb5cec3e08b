"""The persistent compile cache of nutpie's callbacks, and the rest of a quick fresh-process fit.

Every test that builds a cache entry uses its own cache folder, so it starts cold whatever ran before.
A cold entry is compiled in child processes (a few seconds for these small models).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _model_fixtures import EIGHT_SCHOOLS_SE, EIGHT_SCHOOLS_Y, csv_like

from metaeval import compile_cache, executor
from metaeval.model import build_model
from metaeval.spec import load_spec

REPO = Path(__file__).resolve().parent.parent
SMALL = dict(draws=150, tune=150, chains=2, seed=9, target_accept=0.9, save_warmup=False, progress_bar=False)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty cache folder, used by this process and the compile processes it starts."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(compile_cache.ENV_VAR, str(folder))
    return folder


@contextlib.contextmanager
def _logged():
    """The messages metaeval logs meanwhile (its notes: the CLI prints them as ``note: ...``)."""
    import logging

    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("metaeval")
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, str]:
    """A cache folder holding the entry of ``_model()``, built once, and what building it printed."""
    folder = tmp_path_factory.mktemp("built") / "cache"
    with pytest.MonkeyPatch.context() as patch, _logged() as notes:
        patch.setenv(compile_cache.ENV_VAR, str(folder))
        compile_cache.compile_model(_model())
    return folder, notes


@pytest.fixture
def warm(built, cache) -> Path:
    """A copy of the built cache folder, as ``cache``."""
    shutil.copytree(built[0], cache)
    return cache


def _model(y=EIGHT_SCHOOLS_Y, se=EIGHT_SCHOOLS_SE, overrides=()):
    return build_model(csv_like(list(y), list(se)), load_spec("default", list(overrides)))


def _draws(compiled) -> dict[str, np.ndarray]:
    import nutpie

    posterior = nutpie.sample(compiled, **SMALL)["posterior"]
    return {name: np.asarray(posterior[name].values) for name in posterior.data_vars}


_NUTPIES_OWN = """
import json, sys
import nutpie
import numpy as np
from test_compile_cache import _draws, _model
compiled = nutpie.compile_pymc_model(_model(*json.loads(sys.argv[1])))
if len(sys.argv) > 2:
    np.savez(sys.argv[2], **_draws(compiled))
"""


def _nutpie_in_child(tmp: Path, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    done = subprocess.run([sys.executable, "-c", _NUTPIES_OWN, *args], env=env, capture_output=True, text=True, timeout=900, cwd=tmp)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def pytensor_warm(tmp_path_factory) -> None:
    """PyTensor's disk cache holding the functions of ``_model()``'s graph (every model here has that graph: evidence and
    priors are data), compiled by nutpie in a process of its own."""
    _nutpie_in_child(tmp_path_factory.mktemp("warm"), json.dumps([list(EIGHT_SCHOOLS_Y), list(EIGHT_SCHOOLS_SE), []]))


def _nutpies_own_draws(tmp: Path, y=EIGHT_SCHOOLS_Y, se=EIGHT_SCHOOLS_SE, overrides=()) -> dict[str, np.ndarray]:
    """``_draws`` of nutpie's own compile of ``_model(y, se, overrides)``, in a fresh process that loads the PyTensor
    functions from PyTensor's disk cache (``pytensor_warm``), as the cached callbacks run loaded code. Where this
    process compiled them itself (a cold PyTensor cache: a fresh machine), numba's code differed in the last bits of the
    gradient, which NUTS amplifies (seen in CI: 1e-6 apart in every draw); where an earlier test had compiled them in
    this process, it would keep that code."""
    out = tmp / "nutpie.npz"
    _nutpie_in_child(tmp, json.dumps([list(y), list(se), list(overrides)]), str(out))
    with np.load(out) as saved:
        return {name: saved[name] for name in saved.files}


def _assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def _entries(folder: Path) -> list[Path]:
    return sorted(p for p in (folder / "callbacks").iterdir() if p.is_dir())


# --- nutpie's internals ------------------------------------------------------------------------


def test_nutpie_is_pinned_and_its_internals_are_what_the_cache_relies_on():
    """Fails the day a nutpie upgrade changes what compile_cache calls: read nutpie's compile_pymc.py again then."""
    from importlib import metadata

    pinned = re.search(r"^nutpie==(\S+)$", (REPO / "requirements.lock").read_text(), re.M)
    assert pinned, "nutpie must be pinned exactly in requirements.lock"
    assert metadata.version("nutpie") == pinned.group(1)
    assert compile_cache.nutpie_problem() is None


@pytest.mark.mcmc
def test_a_change_in_nutpie_internals_is_reported_and_the_fit_falls_back_to_nutpie(cache, monkeypatch):
    from nutpie import compile_pymc

    with monkeypatch.context() as patch:
        patch.setattr(compile_pymc, "_make_functions", lambda model, *, mode, compute_grad: None)
        assert "_make_functions takes (model, mode, compute_grad), not (model, mode, " in compile_cache.nutpie_problem()
    with monkeypatch.context() as patch:  # a field nutpie no longer has, and a required one this module does not set
        patch.setattr(compile_cache, "NUTPIE_FIELDS", (*[f for f in compile_cache.NUTPIE_FIELDS if f != "user_data"], "_old"))
        assert compile_cache.nutpie_problem() == "nutpie's CompiledPyMCModel fields changed (gone: _old; new: user_data)"
    monkeypatch.setitem(compile_cache.NUTPIE_FUNCTIONS, "_renamed_in_a_later_nutpie", ())
    with _logged() as notes:
        compiled = compile_cache.compile_model(_model())
    assert notes == ["compiling without the compile cache (nutpie.compile_pymc._renamed_in_a_later_nutpie is gone)"]
    assert not cache.exists()  # nutpie's own compile, nothing cached
    assert np.isfinite(_draws(compiled)["mu"]).all()


# --- same draws ----------------------------------------------------------------------------------


@pytest.mark.mcmc
def test_cached_callbacks_draw_exactly_as_nutpies_own_compile(built, warm, pytensor_warm, tmp_path):
    model = _model()
    assert built[1] == [compile_cache.COLD_NOTE]  # the entry was compiled in a child process, then loaded
    with _logged() as notes:
        loaded = compile_cache.compile_model(model)
    assert notes == []
    assert loaded.compiled_logp_func.cache_hits == loaded.compiled_expand_func.cache_hits == 1  # loaded, not compiled here
    [entry] = _entries(warm)
    assert {"callbacks.py", "manifest.json", "__pycache__"} <= {p.name for p in entry.iterdir()}
    _assert_identical(_draws(loaded), _nutpies_own_draws(tmp_path))


@pytest.mark.mcmc
@pytest.mark.parametrize("cpus", [1, 2])
def test_an_entry_compiles_in_one_process_per_callback_given_the_cpus_and_draws_alike(built, cache, monkeypatch, cpus):
    """Two CPUs: logp and expand compile side by side in two processes; one CPU: one after the other in one."""
    started = []
    real = subprocess.Popen
    monkeypatch.setattr(executor, "default_workers", lambda: cpus)
    monkeypatch.setattr(subprocess, "Popen", lambda args, **kwargs: started.append(args[4:]) or real(args, **kwargs))  # [python, -m, module, entry, ...]
    meanwhile = []  # what the caller does while they compile: once, with every compile process started
    with _logged() as notes:
        compiled = compile_cache.compile_model(_model(), meanwhile=lambda: meanwhile.append(len(started)))
    assert notes == [compile_cache.COLD_NOTE]
    assert sorted(started) == ([["expand"], ["logp"]] if cpus == 2 else [["logp", "expand"]])
    assert meanwhile == [len(started)]
    with monkeypatch.context() as patch:
        patch.setenv(compile_cache.ENV_VAR, str(built[0]))
        loaded = compile_cache.compile_model(_model(), meanwhile=lambda: meanwhile.append("a loaded entry waits for nothing"))
        _assert_identical(_draws(compiled), _draws(loaded))
    assert meanwhile == [len(started)]


@pytest.mark.mcmc
def test_a_failed_compile_process_is_reported_and_the_fit_falls_back_to_nutpie(cache, monkeypatch):
    monkeypatch.setattr(compile_cache, "_payload", lambda model: b"not a pickled model")
    with _logged() as notes:
        compiled = compile_cache.compile_model(_model())
    assert len(notes) == 2 and notes[0] == compile_cache.COLD_NOTE
    assert re.fullmatch(r"compiling without the compile cache \(the compile process failed: _pickle\.UnpicklingError: .+\)", notes[1])
    assert [p.name for p in (cache / "callbacks").iterdir() if p.name.startswith(".")] == []  # its scratch folder is gone
    assert np.isfinite(_draws(compiled)["mu"]).all()


@pytest.mark.mcmc
def test_a_refit_with_other_data_reuses_the_cached_sampler_and_draws_as_a_fresh_compile(warm, monkeypatch):
    """metaeval's in-process reuse (nutpie's with_data) works on cached callbacks: it swaps the arrays they read."""
    from metaeval import sampling

    monkeypatch.setattr(sampling, "_COMPILED", [])
    small = dict(chains=2, draws=150, tune=150, seed=5, progress=False)
    first = sampling.fit(_model(), **small)
    other = lambda: _model([1.0, -4.0, 9.0, 2.5, 0.0, 3.0, 11.0, -2.0], [12.0, 9.0, 14.0, 10.0, 8.0, 10.0, 9.0, 15.0], ["tau=halfnormal(4)"])  # noqa: E731
    reused = sampling.fit(other(), **small)
    assert len(sampling._COMPILED) == 1
    sampling._COMPILED.clear()
    fresh = sampling.fit(other(), **small)  # compiled anew: loaded from the same entry
    assert len(_entries(warm)) == 1
    draws = [{name: np.asarray(p["posterior"][name].values) for name in p["posterior"].data_vars} for p in (first, reused, fresh)]
    with pytest.raises(AssertionError):
        _assert_identical(draws[0], draws[2])  # the new data took effect...
    _assert_identical(draws[1], draws[2])  # ...exactly as in a fresh compile


@pytest.mark.subprocess
def test_the_key_follows_the_model_structure_not_its_data_values():
    key = lambda *args: compile_cache._prepare(_model(*args)).key  # noqa: E731
    base = key()
    assert key([1.0] * 8, [2.0] * 8, ["tau=halfnormal(3)", "mu=normal(1, 2)"]) == base  # other data and prior values
    assert key(EIGHT_SCHOOLS_Y, EIGHT_SCHOOLS_SE, ["tau=halfcauchy(5)"]) != base  # another prior family
    assert key(EIGHT_SCHOOLS_Y[:5], EIGHT_SCHOOLS_SE[:5]) != base  # another size


@pytest.mark.subprocess
def test_the_index_key_follows_the_graphs_handed_to_pytensor_not_the_data_values():
    """Read without compiling: the same structure and sizes find the same entry, whatever the data and prior values."""
    def keys(*args):
        model = _model(*args)
        return compile_cache._index_key(model, compile_cache._graphs(model))[0], compile_cache._prepare(model).key

    base = keys()
    assert keys([1.0] * 8, [2.0] * 8, ["tau=halfnormal(3)", "mu=normal(1, 2)"]) == base
    for other in (keys(EIGHT_SCHOOLS_Y, EIGHT_SCHOOLS_SE, ["tau=halfcauchy(5)"]), keys(EIGHT_SCHOOLS_Y[:5], EIGHT_SCHOOLS_SE[:5])):
        assert other[0] != base[0] and other[1] != base[1]  # another prior family, another size: another index key and entry


@pytest.mark.mcmc
def test_a_model_in_the_index_loads_without_compiling_its_graphs_and_draws_as_nutpies_own_compile(warm, pytensor_warm, monkeypatch, tmp_path):
    """The warm path: the index names the entry, PyTensor compiles nothing, and the callbacks run on their saved code."""
    [record] = (warm / "index").iterdir()
    assert json.loads(record.read_text())["entry"] == _entries(warm)[0].name
    other = ([1.0, -4.0, 9.0, 2.5, 0.0, 3.0, 11.0, -2.0], [12.0, 9.0, 14.0, 10.0, 8.0, 10.0, 9.0, 15.0], ["tau=halfnormal(4)"])
    model = _model(*other)

    def compiles(*args, **kwargs):
        raise AssertionError("compiled the graphs of a model in the index")

    with monkeypatch.context() as patch, _logged() as notes:
        patch.setattr(compile_cache, "_prepare", compiles)
        loaded = compile_cache.compile_model(model)
    assert notes == []
    assert loaded.logp_func is None and loaded.expand_func is None  # nutpie's PyTensor functions were never made
    assert loaded.compiled_logp_func.cache_hits == loaded.compiled_expand_func.cache_hits == 1
    _assert_identical(_draws(loaded), _nutpies_own_draws(tmp_path, *other))


@pytest.mark.mcmc
@pytest.mark.parametrize("damage", ["unreadable record", "record of another model", "entry outside the cache", "entry gone"])
def test_a_damaged_index_is_passed_over_and_rewritten(warm, damage):
    model = _model()
    before = _draws(compile_cache.compile_model(model))
    [record] = (warm / "index").iterdir()
    good = record.read_text()
    if damage == "unreadable record":
        record.write_text(good[: len(good) // 2])
    elif damage == "record of another model":
        record.write_text(json.dumps({**json.loads(good), "n_dim": json.loads(good)["n_dim"] + 1}))
    elif damage == "entry outside the cache":
        record.write_text(json.dumps({**json.loads(good), "entry": f"../../{_entries(warm)[0].name}"}))
    else:
        shutil.rmtree(_entries(warm)[0])
    with _logged() as notes:
        again = compile_cache.compile_model(model)
    assert notes == ([compile_cache.COLD_NOTE] if damage == "entry gone" else [])
    assert record.read_text() == good
    _assert_identical(_draws(again), before)


@pytest.mark.mcmc
def test_an_index_that_fails_is_passed_over_never_why_the_cache_is_not_used(warm, monkeypatch):
    def fails(*args, **kwargs):
        raise TypeError("cannot pickle 'generator' object")

    monkeypatch.setattr(compile_cache, "_index_key", fails)
    with _logged() as notes:
        compiled = compile_cache.compile_model(_model())
    assert notes == [] and compiled.logp_func is not None  # prepared in full, loaded from the entry
    assert compiled.compiled_logp_func.cache_hits == 1


@pytest.mark.mcmc
def test_graphs_the_index_cannot_key_are_prepared_in_full_each_time(cache):
    """An unnamed shared variable cannot be found again by name: such a model uses the cache, not the index."""
    import pymc as pm
    import pytensor

    with pm.Model() as model:
        mu = pm.Normal("mu", 0, 1)
        pm.Normal("y", mu * pytensor.shared(np.ones(3)), 1, observed=[0.1, -0.2, 0.3])
    with pytest.raises(compile_cache.Uncacheable, match="not named uniquely"):
        compile_cache._index_key(model, compile_cache._graphs(model))
    with _logged() as notes:
        compiled = compile_cache.compile_model(model)
    assert notes == [compile_cache.COLD_NOTE] and not (cache / "index").exists()
    assert compile_cache.compile_model(model).compiled_logp_func.cache_hits == 1  # loaded from its entry
    assert np.isfinite(_draws(compiled)["mu"]).all()


def _fit(cache: Path, out: Path, csv: Path) -> subprocess.CompletedProcess:
    """``metaeval fit --refit`` in a fresh process with its own compile cache."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop(compile_cache.ENV_VAR, None)
    args = ["fit", "--refit", "--csv", str(csv), "--chains", "2", "--draws", "200", "--tune", "200", "--seed", "5",
            "--format", "json", "--out", str(out), "--cache-dir", str(cache), "--allow-failed-gate"]
    done = subprocess.run([sys.executable, "-m", "metaeval.cli", *args], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.subprocess
def test_a_cold_cache_fit_and_a_warm_cache_fit_are_byte_identical(tmp_path):
    """The first fit after a cache miss runs cache-loaded code too, so it draws what every later fit draws."""
    csv = tmp_path / "eight.csv"
    csv.write_text("study,yi,sei\n" + "".join(f"S{i},{y},{s}\n" for i, (y, s) in enumerate(zip(EIGHT_SCHOOLS_Y, EIGHT_SCHOOLS_SE))))
    cold = _fit(tmp_path / "cache", tmp_path / "cold", csv)
    warm = _fit(tmp_path / "cache", tmp_path / "warm", csv)
    assert f"note: {compile_cache.COLD_NOTE}" in cold.stderr.splitlines()
    assert compile_cache.COLD_NOTE not in warm.stderr
    assert cold.stdout == warm.stdout and json.loads(cold.stdout)["seed"] == 5
    for name in ("summary.json", "summary.csv"):
        assert (tmp_path / "cold" / name).read_bytes() == (tmp_path / "warm" / name).read_bytes()
    [entry] = _entries(tmp_path / "cache")  # --cache-dir was used, by the compile process too
    [record] = (tmp_path / "cache" / "index").iterdir()  # the cold fit recorded it; the warm one found it by the index
    assert json.loads(record.read_text())["entry"] == entry.name


# --- a cache that cannot be trusted is rebuilt --------------------------------------------------------


@pytest.mark.mcmc
@pytest.mark.parametrize("damage", ["edited source", "truncated code recorded in the manifest", "no manifest"])
def test_a_damaged_entry_is_rebuilt_never_trusted(warm, damage):
    """A stale or corrupt entry (its manifest's hashes differ, or numba cannot load it) or a half-built one."""
    model = _model()
    before = _draws(compile_cache.compile_model(model))
    [entry] = _entries(warm)
    if damage == "edited source":
        source = entry / "callbacks.py"
        source.write_text(source.read_text().replace("return 3", "return 0"))
    elif damage == "no manifest":  # a build killed before it finished
        (entry / "manifest.json").unlink()
    else:  # damaged before its hashes were taken: numba's loading fails
        [data] = (entry / "__pycache__").glob("callbacks.logp-*.nbc")
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
        manifest = json.loads((entry / "manifest.json").read_text())
        manifest["files"] = compile_cache._hashes(entry, manifest["files"])
        (entry / "manifest.json").write_text(json.dumps(manifest))
    with _logged() as notes:
        again = compile_cache.compile_model(model)
    assert notes[0].startswith(f"the compiled model in {entry} cannot be trusted (")
    assert notes[1:] == [compile_cache.COLD_NOTE]
    assert "return 3" in (entry / "callbacks.py").read_text()
    _assert_identical(_draws(again), before)
    with _logged() as notes:
        compile_cache.compile_model(model)
    assert notes == []  # rebuilt for good


_RACE = """
import sys
import numpy as np, nutpie
from metaeval import compile_cache
sys.path.insert(0, {tests!r})
from _model_fixtures import EIGHT_SCHOOLS_SE, EIGHT_SCHOOLS_Y, csv_like
from metaeval.model import build_model
from metaeval.spec import load_spec
compiled = compile_cache.compile_model(build_model(csv_like(EIGHT_SCHOOLS_Y, EIGHT_SCHOOLS_SE), load_spec("default")))
mu = nutpie.sample(compiled, draws=100, tune=100, chains=2, seed=4, progress_bar=False)["posterior"]["mu"].values
print(np.asarray(mu).tobytes().hex())
"""


@pytest.mark.subprocess
def test_concurrent_first_runs_compile_once_and_draw_alike(cache):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = _RACE.format(tests=str(Path(__file__).parent))
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [proc.communicate(timeout=900) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), [err for _, err in results]
    assert [err.count(compile_cache.COLD_NOTE) for _, err in results].count(1) == 1  # one compiled, the other waited
    assert results[0][0] == results[1][0]
    assert len(_entries(cache)) == 1


@pytest.mark.mcmc
def test_an_unwritable_cache_folder_falls_back_to_nutpie(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(compile_cache.ENV_VAR, str(blocker / "cache"))
    with _logged() as notes:
        compiled = compile_cache.compile_model(_model())
    [line] = notes
    assert line.startswith("compiling without the compile cache (cannot create ")
    assert np.isfinite(_draws(compiled)["mu"]).all()


@pytest.mark.mcmc
def test_a_model_that_cannot_reach_a_compile_process_falls_back_to_nutpie(cache, monkeypatch):
    import cloudpickle

    def refuse(obj):
        raise TypeError("cannot pickle '_thread.lock' object")

    monkeypatch.setattr(cloudpickle, "dumps", refuse)
    with _logged() as notes:
        compiled = compile_cache.compile_model(_model())
    assert notes == [
        "compiling without the compile cache (the model cannot be handed to a compile process "
        "(TypeError: cannot pickle '_thread.lock' object))"]
    assert not any(p.is_dir() for p in (cache / "callbacks").iterdir())  # no half-built entry
    assert np.isfinite(_draws(compiled)["mu"]).all()


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(compile_cache.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.cache_root() == tmp_path / "xdg" / "metaeval"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # ignored, as the XDG specification says
    assert compile_cache.cache_root() == Path.home() / ".cache" / "metaeval"
    monkeypatch.setenv(compile_cache.ENV_VAR, str(tmp_path / "mine"))
    assert compile_cache.cache_root() == tmp_path / "mine"


# --- the rest of a fresh-process fit ----------------------------------------------------------------------

_MODULES = """
import atexit, json, sys
from metaeval.cli import main
heavy = ("pymc", "pytensor", "numba", "nutpie", "matplotlib", "arviz", "arviz_plots", "dask", "distributed", "jinja2")
atexit.register(lambda: print(json.dumps(sorted(m for m in sys.modules if sys.modules[m] is not None and (m.split(".")[0] in heavy
                                                or m in ("metaeval.report", "metaeval.plots")))), file=sys.stderr))
sys.argv = ["metaeval", *sys.argv[1:]]
main()
"""


def _modules(*args: str, cwd: Path) -> list[str]:
    """The heavy modules a fresh ``metaeval`` process imports for this command."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", _MODULES, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stderr.strip().splitlines()[-1])


@pytest.mark.subprocess
def test_fit_imports_no_plotting_dask_or_report_and_summary_and_report_never_import_pymc(tmp_path):
    csv = tmp_path / "small.csv"
    csv.write_text("study,yi,sei\nA,0.1,0.1\nB,0.3,0.2\nC,0.2,0.15\n")
    common = ["--csv", str(csv), "--chains", "2", "--draws", "100", "--tune", "100", "--out", str(tmp_path / "out"), "--allow-failed-gate"]
    fit = _modules("fit", "--refit", *common, cwd=tmp_path)
    assert {"pymc", "nutpie", "numba"} <= set(fit)  # it did fit...
    assert not {"matplotlib", "arviz", "arviz_plots", "dask", "distributed", "jinja2", "metaeval.report", "metaeval.plots"} & set(fit)
    for command in ("summary", "report"):
        modules = _modules(command, *common, cwd=tmp_path)
        assert not {"pymc", "pytensor", "numba", "nutpie"} & set(modules), command
    assert "metaeval.report" in modules  # the report was written by this process


@pytest.mark.subprocess
def test_the_program_ends_fast_with_all_its_output_and_atexit_handlers_run(tmp_path):
    """``main()`` as the program ends with os._exit: buffered output must be flushed and atexit handlers run first."""
    marker = tmp_path / "atexit-ran"
    code = (f"import atexit, pathlib, sys\natexit.register(lambda: pathlib.Path({str(marker)!r}).write_text('yes'))\n"
            "from metaeval.cli import main\nsys.argv = ['metaeval', 'evidence', '--format', 'csv']\nsys.exit(main())\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    fast = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=300)
    slow = subprocess.run([sys.executable, "-c", "import sys\nfrom metaeval.cli import main\nsys.exit(main(['evidence', '--format', 'csv']))"],
                          env=env, capture_output=True, timeout=300)
    assert fast.returncode == slow.returncode == 0
    assert len(fast.stdout) > 10_000 and fast.stdout == slow.stdout  # piped, so block-buffered until the flush
    assert marker.read_text() == "yes"
    failed = subprocess.run([sys.executable, "-c", code.replace("'evidence', '--format', 'csv'", "'fit', '--csv', 'missing.csv'")],
                            env=env, capture_output=True, timeout=300, cwd=tmp_path)
    assert failed.returncode == 2 and b"missing.csv" in failed.stderr  # the status survives os._exit
