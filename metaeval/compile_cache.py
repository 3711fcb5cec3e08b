"""A persistent compile cache for nutpie's two C callbacks, so a fresh process samples in seconds.

``nutpie.compile_pymc_model`` spends most of a fresh fit (12.8 of 13.9 s on the bundled evidence)
letting numba compile two C callbacks, ``logp`` and ``expand``. nutpie builds them as closures over
PyTensor's compiled functions and the shared-data arrays, which numba's disk cache cannot key, so
every process compiles them again (nutpie #115; #334 proposed a fix and was closed). Here the same
callbacks are written out as module-level functions in a real source file, one per model graph, and
compiled with ``numba.cfunc(sig, cache=True)``, so a later process loads them from disk.

- An entry's key is a hash of its generated source, which names everything the compiled code
  depends on: PyTensor's own cache keys of the two compiled graphs (ops, their properties, topology,
  constants by value), the graphs' input types, the shared variables' names, dtypes and ranks, and the
  sizes; plus the exact versions of Python, numba, llvmlite, PyTensor, PyMC, nutpie and NumPy and the
  CPU numba compiles for. Never the values of ``pm.Data`` containers: a refit with other prior values
  or other evidence of the same shape loads the same entry.
- The callbacks read the shared arrays through nutpie's own ``user_data`` record, as nutpie's do, so
  ``CompiledPyMCModel.with_data`` keeps working, and call the same PyTensor functions.
- A missing entry is compiled in a child process and then loaded like any other, so every fit, the
  first included, runs code loaded from the cache: numba code compiled in-process and the same code
  loaded from disk were seen to differ in the last bits of the gradient when this cache was built, which NUTS turns
  into other draws. (On the models of the tests and of bench/sbc.py the two agree bit for bit.)
- Entries live under ``$METAEVAL_CACHE_DIR``, else ``$XDG_CACHE_HOME/metaeval``, else
  ``~/.cache/metaeval`` (``metaeval --cache-dir`` sets the first). A lock per entry makes concurrent
  first runs compile once; an entry whose files differ from their recorded SHA-256, or which numba
  does not load (stale, other numba, other CPU, unreadable), is rebuilt, never trusted.
- It relies on nutpie internals (``_make_functions``, ``make_user_data``, ``_prepare_dims_and_coords``,
  the ``CompiledPyMCModel`` fields, the ``user_data`` record layout), on PyTensor's numba cache key
  and on numba's name for its CPU target; nutpie is pinned exactly in ``requirements.lock``. When they differ from what this module was
  written against, or a model cannot be cached, the fit compiles with ``nutpie.compile_pymc_model``
  as before, after a one-line note.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import types
from contextlib import contextmanager
from dataclasses import MISSING, dataclass, fields
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)

#: The environment variable naming the cache folder.
ENV_VAR = "METAEVAL_CACHE_DIR"
#: Raise when the generated code or the layout of an entry changes: entries of other formats are never read.
FORMAT = 1
#: The nutpie internals used here, with the leading parameters relied on.
NUTPIE_FUNCTIONS = {
    "_make_functions": ("model", "mode", "compute_grad", "join_expanded", "pymc_initial_point_fn", "var_names"),
    "make_user_data": ("shared_var_keys", "shared_data"),
    "update_user_data": ("user_data", "user_data_storage"),
    "_prepare_dims_and_coords": ("model", "shape_info", "reparameterized_names"),
}
#: The ``CompiledPyMCModel`` fields set here; nutpie's default applies to any other (there is one today).
NUTPIE_FIELDS = ("dims", "reparameterized_names", "compiled_logp_func", "compiled_expand_func", "initial_point_func",
                 "shared_data", "shared_var_keys", "user_data", "n_expanded", "shape_info", "logp_func", "expand_func",
                 "_n_dim", "_shapes", "_coords")
#: Logged once before a cold compile (the bundled model: 13-17 CPU-s for the callbacks, bench/results/).
COLD_NOTE = "compiling the model once (about 20 s); later fits start in seconds"
#: The longest wait for the compile process (a 10,000-estimate model takes minutes on a loaded machine).
CHILD_TIMEOUT_S = 1800

_LOGP_SIG = "int64(uint64, CPointer(float64), CPointer(float64), CPointer(float64), voidptr)"
_EXPAND_SIG = "int64(uint64, uint64, CPointer(float64), CPointer(float64), voidptr)"


class Uncacheable(Exception):
    """This model, or this installation, cannot use the cache; the message says why."""


class _NotInCache(Exception):
    """numba found no loadable entry (raised instead of compiling in this process)."""


def _refuse_to_compile(*args, **kwargs):
    """A numba ``pipeline_class`` that never compiles: ``numba.cfunc(..., cache=True)`` then only loads."""
    raise _NotInCache


def cache_root() -> Path:
    """The cache folder: ``$METAEVAL_CACHE_DIR``, ``$XDG_CACHE_HOME/metaeval`` or ``~/.cache/metaeval``."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "metaeval"  # XDG: a relative path is ignored


def nutpie_problem() -> str | None:
    """How nutpie differs from what this module relies on, or None."""
    from nutpie import compile_pymc

    for name, params in NUTPIE_FUNCTIONS.items():
        func = getattr(compile_pymc, name, None)
        if not callable(func):
            return f"nutpie.compile_pymc.{name} is gone"
        have = tuple(inspect.signature(func).parameters)
        if have[:len(params)] != params:
            return f"nutpie.compile_pymc.{name} takes ({', '.join(have)}), not ({', '.join(params)})"
    cls = getattr(compile_pymc, "CompiledPyMCModel", None)
    if cls is None:
        return "nutpie.compile_pymc.CompiledPyMCModel is gone"
    have = {f.name: f for f in fields(cls)}
    missing = [name for name in NUTPIE_FIELDS if name not in have]
    unset = [name for name, f in have.items() if name not in NUTPIE_FIELDS and f.default is MISSING and f.default_factory is MISSING]
    if missing or unset:
        return f"nutpie's CompiledPyMCModel fields changed (gone: {', '.join(missing) or 'none'}; new: {', '.join(unset) or 'none'})"
    return None


# --- what an entry is made of --------------------------------------------------------------


@dataclass
class _Parts:
    """nutpie's pieces of a compiled model, except the two callbacks, and the source and key of their entry."""

    n_dim: int
    n_expanded: int
    logp_fn: object  # PyTensor functions (mode NUMBA); their ``vm.jit_fn`` is called by the callbacks
    expand_fn: object
    initial_point: object
    shape_info: tuple
    reparameterized_names: list[str]
    dims: dict
    coords: dict
    shared_data: dict
    shared_var_keys: dict
    user_data: object
    source: str
    key: str


def _locked(func):
    """``func`` behind a lock: nutpie calls the initial-point function from several threads, as nutpie's own does."""
    lock = threading.Lock()

    def call(*args, **kwargs):
        with lock:
            return func(*args, **kwargs)

    return call


def _prepare(model) -> _Parts:
    """Everything ``nutpie.compile_pymc_model`` makes for ``model`` except the two numba callbacks.

    Follows nutpie 0.16.11 step by step (initial points from the support point with jitter, PyTensor
    functions in numba mode, shared variables copied read-only), so the sampler is nutpie's own but for
    where the callbacks come from. The shared variables' record keys are their positions, not nutpie's
    random ones, so the generated source is the same in every process.
    """
    import numpy as np
    from nutpie import compile_pymc
    from pymc.initial_point import make_initial_point_fn

    point_fn = make_initial_point_fn(model=model, overrides=None, default_strategy="support_point",
                                     jitter_rvs=set(model.free_RVs), return_transformed=True)
    n_dim, n_expanded, logp_fn, expand_fn, initial_point, shape_info, reparameterized = compile_pymc._make_functions(
        model, mode="NUMBA", compute_grad=True, join_expanded=True, pymc_initial_point_fn=_locked(point_fn), var_names=None)
    shared_var_keys, shared_data = {}, {}
    for var in [*logp_fn.get_shared(), *expand_fn.get_shared()]:
        if var not in shared_var_keys:
            key = f"s{len(shared_var_keys)}"
            shared_var_keys[var] = key
            shared_data[key] = np.array(var.get_value(), order="C", copy=True)
            shared_data[key].flags.writeable = False
    user_data = compile_pymc.make_user_data(shared_var_keys, shared_data)
    source = _source(n_dim, n_expanded, logp_fn, expand_fn, shared_var_keys, shared_data, user_data.dtype)
    dims, coords = compile_pymc._prepare_dims_and_coords(model, shape_info, reparameterized)
    return _Parts(n_dim, n_expanded, logp_fn, expand_fn, initial_point, shape_info, reparameterized, dims, coords,
                  shared_data, shared_var_keys, user_data, source, _key(source))


def _graph_key(function) -> str:
    """PyTensor's own numba cache key of a compiled function's graph (ops, properties, topology, constants)."""
    from pytensor.link.numba.cache import CACHED_SRC_FUNCTIONS

    key = CACHED_SRC_FUNCTIONS.get(getattr(function.vm.jit_fn, "py_func", None))
    if key is None:
        raise Uncacheable("PyTensor has no cache key for this model's graph (an Op it cannot cache)")
    return key


def _words(record) -> dict[str, dict[str, list[int]]]:
    """Where nutpie's ``user_data`` record keeps each shared array's address, size and shape: 8-byte word indices."""
    import math

    def field(dtype, name):
        if dtype.fields is None or name not in dtype.fields:
            raise Uncacheable(f"nutpie's user_data record has no field {name!r}")
        return dtype.fields[name][:2]

    shared, base = field(record, "shared")
    out: dict[str, dict[str, list[int]]] = {}
    for part in ("data", "size", "shape"):
        block, offset = field(shared, part)
        for key, (dtype, at) in (block.fields or {}).items():
            start = base + offset + at
            if start % 8 or dtype.base.itemsize != 8 or dtype.base.kind != "u":
                raise Uncacheable("nutpie's user_data record is not made of 8-byte unsigned words")
            out.setdefault(key, {})[part] = list(range(start // 8, start // 8 + math.prod(dtype.shape)))
    return out


def _source(n_dim, n_expanded, logp_fn, expand_fn, shared_var_keys, shared_data, record) -> str:
    """The Python source of the two callbacks: module-level functions, sizes and record offsets as literals."""
    import textwrap

    words = _words(record)
    names = {key: ascii(var.name) for var, key in shared_var_keys.items()}  # ascii: no line break can reach the code

    def reads(function) -> tuple[str, str]:
        lines, args = [], []
        for i, var in enumerate(function.get_shared()):
            key = shared_var_keys[var]
            array, w = shared_data[key], words[key]
            dims = [f"int(record[{j}])" for j in w["shape"][:array.ndim]]
            shape = f"({', '.join(dims)}{',' if len(dims) == 1 else ''})"
            lines.append(f"        a{i} = numba.carray(_pointer(record[{w['data'][0]}]), {shape}, np.{array.dtype.name})  # {names[key]}")
            args.append(f", a{i}")
        return "\n".join(lines) or "        pass", "".join(args)

    def comment(text: str) -> str:
        return "\n".join(textwrap.wrap(ascii(text)[1:-1], 100, initial_indent="# ", subsequent_indent="#     "))

    def graph(what: str, function) -> str:
        fgraph = function.maker.fgraph
        return "\n".join(comment(line) for line in (
            f"{what}: PyTensor graph {_graph_key(function)}",
            f"inputs: {', '.join(str(v.type) for v in fgraph.inputs)}",
            f"outputs: {', '.join(str(v.type) for v in fgraph.outputs)}"))

    logp_reads, logp_args = reads(logp_fn)
    expand_reads, expand_args = reads(expand_fn)
    shared = comment("shared arrays, read through nutpie's user_data record: "
                     + ("; ".join(f"{key} {names[key]} ({shared_data[key].dtype.name}, {shared_data[key].ndim}-d)" for key in shared_data) or "none"))
    return _TEMPLATE.format(format=FORMAT, logp_graph=graph("log density and gradient", logp_fn), shared=shared,
                            expand_graph=graph("expansion to the traced variables", expand_fn), n_words=record.itemsize // 8,
                            n_dim=n_dim, n_expanded=n_expanded, logp_reads=logp_reads, logp_args=logp_args,
                            expand_reads=expand_reads, expand_args=expand_args)


_TEMPLATE = '''\
# nutpie's logp and expand C callbacks for one model, written by metaeval.compile_cache (format {format}).
# Module-level functions with the sizes as literals, so numba's disk cache keys them and a later
# process loads them instead of compiling. Do not edit: an edited file is rebuilt.
{logp_graph}
{expand_graph}
{shared}

import numba
import numpy as np
from numba.core import cgutils, types
from numba.extending import intrinsic

logp_inner = None  # PyTensor's compiled functions, set by metaeval.compile_cache before compiling
expand_inner = None


@intrinsic
def _pointer(typingctx, address):
    """The integer ``address`` as a void pointer."""

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(address), codegen


def logp(dim, x_, out_, logp_, user_data_):
    if dim != {n_dim}:
        return -1
    try:
        record = numba.carray(user_data_, ({n_words},), np.uint64)
{logp_reads}
        x = numba.carray(x_, ({n_dim},))
        out = numba.carray(out_, ({n_dim},))
        logp = numba.carray(logp_, ())
        value, grad = logp_inner(x{logp_args})
        logp[()] = value
        out[...] = grad
        if not np.all(np.isfinite(out)):
            return 3
        if not np.isfinite(value):
            return 4
    except Exception:  # noqa: BLE001 - a C callback reports failure by its return code
        return 1
    return 0


def expand(dim, expanded, x_, out_, user_data_):
    if dim != {n_dim} or expanded != {n_expanded}:
        return -1
    try:
        record = numba.carray(user_data_, ({n_words},), np.uint64)
{expand_reads}
        x = numba.carray(x_, ({n_dim},))
        out = numba.carray(out_, ({n_expanded},))
        (values,) = expand_inner(x{expand_args})
        out[...] = values
    except Exception:  # noqa: BLE001
        return -2
    return 0
'''


def _key(source: str) -> str:
    """The entry's name: a hash of the source, the library versions and the CPU numba targets."""
    from numba.core.registry import cpu_target

    versions = {name: metadata.version(name) for name in ("numba", "llvmlite", "pytensor", "pymc", "nutpie", "numpy")}
    content = json.dumps({"format": FORMAT, "source": source, "python": sys.version, "versions": versions,
                          "cpu": repr(cpu_target.target_context.codegen().magic_tuple())}, sort_keys=True)
    return hashlib.sha256(content.encode()).hexdigest()[:32]


# --- entries on disk ---------------------------------------------------------------------------


def compile_model(model):
    """``nutpie.compile_pymc_model(model)``, with the two callbacks loaded from the cache (built first if missing).

    Falls back to nutpie's own compile, after a one-line note on stderr, when nutpie's internals
    differ from what this module relies on, or this model or cache folder cannot be used.
    """
    problem = nutpie_problem()
    if problem is None:
        try:
            parts = _prepare(model)
            return _compiled(parts, *_callbacks(model, parts))
        except Exception as err:  # the cache must never be why a fit fails: nutpie's own compile decides
            problem = str(err) if isinstance(err, Uncacheable) else f"{type(err).__name__}: {err}"
    log.warning("compiling without the compile cache (%s)", problem)
    import nutpie

    return nutpie.compile_pymc_model(model)


def _callbacks(model, parts: _Parts):
    """The two callbacks of ``parts`` loaded from their entry, which is built first when missing or untrusted."""
    entry = cache_root() / "callbacks" / parts.key
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise Uncacheable(f"cannot create {entry.parent}: {err.strerror}") from None
    with _lock(entry, shared=True):
        problem = _untrusted(entry, parts)
        if problem is None:
            try:
                return _load(entry, parts)
            except Exception as err:  # stale, unreadable or foreign: rebuilt below
                problem = f"numba cannot load it ({type(err).__name__})"
    with _lock(entry, shared=False):
        if _untrusted(entry, parts) is None:  # built by another process while this one waited
            try:
                return _load(entry, parts)
            except Exception as err:
                problem = f"numba cannot load it ({type(err).__name__})"
        payload = _payload(model)
        if entry.exists():
            log.warning("the compiled model in %s cannot be trusted (%s); compiling it again", entry, problem)
        log.warning(COLD_NOTE)
        _build(payload, parts, entry)
        try:
            return _load(entry, parts)
        except _NotInCache:
            raise Uncacheable("numba did not keep the compiled callbacks on disk") from None


@contextmanager
def _lock(entry: Path, *, shared: bool):
    """A shared (reading) or exclusive (building) lock on ``entry`` across processes; none where fcntl is missing."""
    try:
        import fcntl
    except ImportError:  # Windows: numba writes its files atomically, so the worst case is compiling twice
        yield
        return
    with open(entry.with_name(entry.name + ".lock"), "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _hashes(entry: Path, names) -> dict[str, str]:
    return {name: hashlib.sha256((entry / name).read_bytes()).hexdigest() for name in names}


def _untrusted(entry: Path, parts: _Parts) -> str | None:
    """Why the files of ``entry`` cannot be used as they are, or None: each must match its recorded SHA-256."""
    try:
        manifest = json.loads((entry / "manifest.json").read_text(encoding="utf-8"))
        files = manifest["files"]
        if manifest["key"] != parts.key or files.get("callbacks.py") != hashlib.sha256(parts.source.encode()).hexdigest():
            return "it belongs to another model"
        if _hashes(entry, files) != files:
            return "its files changed after it was built"
    except FileNotFoundError:
        return "it is incomplete" if entry.exists() else "it is missing"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "its manifest is unreadable"
    return None


def _load(entry: Path, parts: _Parts, *, build: bool = False):
    """The two callbacks from ``entry``'s source, loaded from numba's disk cache; compiled and saved with ``build``."""
    import numba

    path = entry / "callbacks.py"
    module = types.ModuleType(f"metaeval_callbacks_{parts.key}")
    module.__file__ = str(path)
    exec(compile(parts.source, str(path), "exec"), module.__dict__)  # the file's own text: numba stamps the file
    sys.modules[module.__name__] = module  # numba names the module in what it saves, and imports it on loading
    module.logp_inner, module.expand_inner = parts.logp_fn.vm.jit_fn, parts.expand_fn.vm.jit_fn
    options = {} if build else {"pipeline_class": _refuse_to_compile}
    return (numba.cfunc(_LOGP_SIG, cache=True, **options)(module.logp),
            numba.cfunc(_EXPAND_SIG, cache=True, **options)(module.expand))


def _payload(model) -> bytes:
    """``model`` as the compile process reads it from its stdin."""
    import cloudpickle

    try:
        return cloudpickle.dumps(model)
    except Exception as err:
        raise Uncacheable(f"the model cannot be handed to a compile process ({type(err).__name__}: {err})") from None


def _build(payload: bytes, parts: _Parts, entry: Path) -> None:
    """Compile ``entry`` afresh in a child process given the model (numba saves the code), then record its files' hashes."""
    shutil.rmtree(entry, ignore_errors=True)
    entry.mkdir(parents=True)
    (entry / "callbacks.py").write_text(parts.source, encoding="utf-8")
    try:
        done = subprocess.run([sys.executable, "-m", "metaeval.compile_cache", str(entry)], input=payload,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise Uncacheable(f"the compile process took more than {CHILD_TIMEOUT_S} s") from None
    if done.returncode != 0:
        last = (done.stderr.decode(errors="replace").strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise Uncacheable(f"the compile process failed: {last}")
    names = sorted(str(p.relative_to(entry)) for p in entry.rglob("*") if p.is_file())
    manifest = {"key": parts.key, "files": _hashes(entry, names)}
    (entry / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def _compiled(parts: _Parts, logp, expand):
    """nutpie's compiled model with the cached callbacks: what ``nutpie.compile_pymc_model`` returns."""
    from nutpie.compile_pymc import CompiledPyMCModel

    return CompiledPyMCModel(
        dims=parts.dims, _coords=parts.coords, _n_dim=parts.n_dim, n_expanded=parts.n_expanded, shape_info=parts.shape_info,
        _shapes={name: tuple(shape) for name, _, shape in zip(*parts.shape_info)}, reparameterized_names=parts.reparameterized_names,
        compiled_logp_func=logp, compiled_expand_func=expand, initial_point_func=parts.initial_point,
        shared_data=parts.shared_data, shared_var_keys=parts.shared_var_keys, user_data=parts.user_data,
        logp_func=parts.logp_fn, expand_func=parts.expand_fn,
    )


def _child(entry: Path) -> int:
    """The compile process: rebuild the parts of the model on stdin, check they make this entry, compile and save the callbacks."""
    import cloudpickle

    model = cloudpickle.loads(sys.stdin.buffer.read())
    parts = _prepare(model)
    if parts.key != entry.name or (entry / "callbacks.py").read_text(encoding="utf-8") != parts.source:
        print(f"the model rebuilt in the compile process has key {parts.key}, not {entry.name}", file=sys.stderr)
        return 3
    import warnings

    from numba import NumbaWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Cannot cache", category=NumbaWarning)  # fail loudly, not silently uncached
        _load(entry, parts, build=True)
    return 0


if __name__ == "__main__":
    sys.exit(_child(Path(sys.argv[1])))
