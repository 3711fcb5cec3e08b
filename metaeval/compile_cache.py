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
- An index finds a model's entry without compiling anything: keyed by a hash of the two graphs as nutpie
  hands them to PyTensor (before PyTensor's rewrites), the model's check_bounds, PyTensor's settings and
  the same versions and CPU, it names the entry and the order of the shared variables. A model found
  there skips PyTensor's rewrites and numba code of its graphs (the bundled model's compile_model in a
  fresh process: 0.88 -> 0.43 s): the callbacks loaded from disk hold that code. Graphs it cannot key (an op
  without ``__props__``, shared variables not named uniquely) and records it cannot use are prepared in
  full as before, which records them again.
- The callbacks read the shared arrays through nutpie's own ``user_data`` record, as nutpie's do, so
  ``CompiledPyMCModel.with_data`` keeps working, and call the same PyTensor functions.
- A missing entry is compiled in child processes (one per callback, side by side, given two CPUs) and
  then loaded like any other, so every fit, the first included, runs code loaded from the cache: numba
  code compiled in-process and the same code loaded from disk were seen to differ in the last bits of the
  gradient when this cache was built, which NUTS turns into other draws. (On the models of the tests and
  of bench/sbc.py the two agree bit for bit.)
- Entries live under ``$METAEVAL_CACHE_DIR``, else ``$XDG_CACHE_HOME/metaeval``, else
  ``~/.cache/metaeval`` (``metaeval --cache-dir`` sets the first). A lock per entry makes concurrent
  first runs compile once; an entry whose files differ from their recorded SHA-256, or which numba
  does not load (stale, other numba, other CPU, unreadable), is rebuilt, never trusted.
- It relies on nutpie internals (``_make_functions`` and its compiling with ``pymc.pytensorf.compile``,
  ``make_user_data``, ``_prepare_dims_and_coords``, the ``CompiledPyMCModel`` fields, the ``user_data``
  record layout), on PyTensor's numba cache key and its registry of settings (``config._config_var_dict``),
  and on numba's name for its CPU target; nutpie is pinned exactly in ``requirements.lock``. When they
  differ from what this module was written against, or a model cannot be cached, the fit compiles with
  ``nutpie.compile_pymc_model`` as before, after a one-line note.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
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

#: The two callbacks in the generated source, with their numba signatures (nutpie's C interface).
CALLBACKS = {"logp": "int64(uint64, CPointer(float64), CPointer(float64), CPointer(float64), voidptr)",
             "expand": "int64(uint64, uint64, CPointer(float64), CPointer(float64), voidptr)"}


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
    logp_fn: object  # PyTensor functions (mode NUMBA) whose ``vm.jit_fn`` the callbacks call; None when loaded by the index
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


class _Compile:
    """A call of PyMC's ``compile`` that nutpie's ``_make_functions`` made, kept to be run when the function is needed."""

    def __init__(self, model, real, inputs, outputs, kwargs) -> None:
        self.model, self.real, self.inputs, self.outputs, self.kwargs = model, real, inputs, outputs, kwargs

    def run(self):
        with self.model:  # as nutpie calls it: PyMC's compile reads check_bounds from the model in context
            return self.real(self.inputs, self.outputs, **self.kwargs)


@dataclass
class _Graphs:
    """What nutpie's ``_make_functions`` makes for a model, with its two compiles (log density, expansion) not yet run."""

    n_dim: int
    n_expanded: int
    logp: _Compile
    expand: _Compile
    initial_point: object
    shape_info: tuple
    reparameterized_names: list[str]


_DEFERRING = threading.Lock()  # one thread at a time swaps PyMC's compile for the recorder


def _graphs(model) -> _Graphs:
    """nutpie 0.16.11's ``_make_functions`` for ``model`` (initial points from the support point with jitter, mode
    NUMBA), with PyMC's ``compile`` of the two NUMBA functions recorded instead of run: a model the index finds
    needs neither PyTensor's rewrites nor its numba code of them (its callbacks carry the compiled code)."""
    import pymc.pytensorf
    from nutpie import compile_pymc
    from pymc.initial_point import make_initial_point_fn

    point_fn = make_initial_point_fn(model=model, overrides=None, default_strategy="support_point",
                                     jitter_rvs=set(model.free_RVs), return_transformed=True)
    calls: list[_Compile] = []
    with _DEFERRING:
        real, owner = pymc.pytensorf.compile, threading.get_ident()

        def record(inputs, outputs, *args, **kwargs):
            if args or kwargs.get("mode") != "NUMBA" or threading.get_ident() != owner:
                return real(inputs, outputs, *args, **kwargs)
            calls.append(_Compile(model, real, inputs, outputs, kwargs))
            return calls[-1]

        pymc.pytensorf.compile = record
        try:
            n_dim, n_expanded, logp, expand, initial_point, shape_info, reparameterized = compile_pymc._make_functions(
                model, mode="NUMBA", compute_grad=True, join_expanded=True, pymc_initial_point_fn=_locked(point_fn), var_names=None)
        finally:
            pymc.pytensorf.compile = real
    if len(calls) != 2 or [logp, expand] != calls:
        raise Uncacheable("nutpie's _make_functions no longer compiles its functions with pymc.pytensorf.compile")
    return _Graphs(n_dim, n_expanded, logp, expand, initial_point, shape_info, reparameterized)


def _prepare(model, graphs: _Graphs | None = None) -> _Parts:
    """Everything ``nutpie.compile_pymc_model`` makes for ``model`` except the two numba callbacks.

    Follows nutpie 0.16.11 step by step (``_graphs``, then PyTensor functions in numba mode, shared
    variables copied read-only), so the sampler is nutpie's own but for where the callbacks come from.
    The shared variables' record keys are their positions, not nutpie's random ones, so the generated
    source is the same in every process.
    """
    from nutpie import compile_pymc

    g = graphs or _graphs(model)
    logp_fn, expand_fn = g.logp.run(), g.expand.run()
    shared = list(dict.fromkeys([*logp_fn.get_shared(), *expand_fn.get_shared()]))
    shared_var_keys, shared_data, user_data = _shared(shared)
    source = _source(g.n_dim, g.n_expanded, logp_fn, expand_fn, shared_var_keys, shared_data, user_data.dtype)
    dims, coords = compile_pymc._prepare_dims_and_coords(model, g.shape_info, g.reparameterized_names)
    return _Parts(g.n_dim, g.n_expanded, logp_fn, expand_fn, g.initial_point, g.shape_info, g.reparameterized_names, dims, coords,
                  shared_data, shared_var_keys, user_data, source, _key(source))


def _shared(variables) -> tuple[dict, dict, object]:
    """nutpie's shared-variable keys, read-only copies of their values and its ``user_data`` record, keyed by position."""
    import numpy as np
    from nutpie import compile_pymc

    shared_var_keys, shared_data = {}, {}
    for var in variables:
        key = shared_var_keys[var] = f"s{len(shared_var_keys)}"
        shared_data[key] = np.array(var.get_value(), order="C", copy=True)
        shared_data[key].flags.writeable = False
    return shared_var_keys, shared_data, compile_pymc.make_user_data(shared_var_keys, shared_data)


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


@functools.cache
def _environment() -> dict:
    """The installation a compiled entry is only valid for: Python, the exact library versions, the CPU numba targets."""
    from numba.core.registry import cpu_target

    versions = {name: metadata.version(name) for name in ("numba", "llvmlite", "pytensor", "pymc", "nutpie", "numpy")}
    return {"format": FORMAT, "python": sys.version, "versions": versions, "cpu": repr(cpu_target.target_context.codegen().magic_tuple())}


def _key(source: str) -> str:
    """The entry's name: a hash of the source, the library versions and the CPU numba targets."""
    content = json.dumps({**_environment(), "source": source}, sort_keys=True)
    return hashlib.sha256(content.encode()).hexdigest()[:32]


# --- the index: a model's graphs, as handed to PyTensor, name its entry --------------------------

#: PyTensor settings that cannot change what its NUMBA mode compiles (paths, C compiler, profiling, debug
#: modes, messages); some are slow to work out. Every other setting is part of an index key.
_IRRELEVANT_SETTINGS = ("blas__", "cxx", "gcc", "compiledir", "base_compiledir", "generated_src_dir", "profil", "DebugMode__",
                        "NanGuardMode__", "traceback__", "cmodule__", "compile__", "print_global_stats", "compiler_verbose",
                        "optimizer_verbose", "nocleanup", "exception_verbosity", "unpickle_function", "warn_float64")


def _index_key(model, graphs: _Graphs) -> tuple[str, dict]:
    """The index key of ``graphs`` and their shared variables by name: what PyTensor is given to compile, hashed.

    The hash names each node's op by its class and ``__props__`` (PyTensor's own notion of op equality),
    each variable's type, constants by value, shared variables and other inputs by name and type, the
    topology, the inputs, outputs and givens of both compiles, the model's check_bounds (which picks
    PyMC's rewrites) and PyTensor's settings; the environment of ``_key`` (versions, CPU) is added. What
    PyTensor compiles follows from these, so equal keys lead to the same entry, without rewriting or
    compiling anything. Never the values of shared variables (``pm.Data``): their shapes are in the
    types of the graphs, which are sized by the model's current data.
    """
    import pickle

    import numpy as np
    from pytensor import config
    from pytensor.compile.sharedvalue import SharedVariable
    from pytensor.graph.basic import Constant
    from pytensor.graph.traversal import toposort

    ids: dict = {}
    shared: dict[str, object] = {}
    lines: list = []
    digests: dict[int, tuple[object, str]] = {}  # id -> (the object, kept alive so its id stays its own; its digest)

    def digest(obj, content) -> str:
        if id(obj) not in digests:
            digests[id(obj)] = (obj, hashlib.sha256(pickle.dumps(content(), protocol=5)).hexdigest())
        return digests[id(obj)][1]

    def op(node) -> str:
        props = getattr(node.op, "__props__", None)
        if props is None:
            raise Uncacheable(f"the op {type(node.op).__name__} has no __props__")
        return digest(node.op, lambda: (type(node.op).__module__, type(node.op).__qualname__, node.op._props()))

    def of_type(var) -> str:
        return digest(var.type, lambda: var.type)

    def ref(var) -> int:
        if var not in ids:  # a root of the graphs
            if isinstance(var, Constant):
                data = np.asarray(var.data) if isinstance(var.data, np.ndarray | np.generic) else None
                value = hashlib.sha256(data.dtype.str.encode() + repr(data.shape).encode() + data.tobytes()).hexdigest() \
                    if data is not None else hashlib.sha256(pickle.dumps(var.data, protocol=5)).hexdigest()
                lines.append(("constant", of_type(var), value))
            elif isinstance(var, SharedVariable):
                if not var.name or shared.setdefault(var.name, var) is not var:
                    raise Uncacheable(f"the shared variables are not named uniquely ({var.name!r})")
                lines.append(("shared", var.name, of_type(var)))
            else:
                lines.append(("input", var.name, of_type(var)))
            ids[var] = len(ids)
        return ids[var]

    for name, call in (("logp", graphs.logp), ("expand", graphs.expand)):
        if set(call.kwargs) - {"mode", "givens"}:
            raise Uncacheable(f"nutpie compiles with other arguments ({', '.join(sorted(call.kwargs))})")
        givens = [tuple(pair) for pair in call.kwargs.get("givens") or ()]
        outputs = list(call.outputs)
        for node in toposort([*outputs, *(v for pair in givens for v in pair)]):
            if node.outputs[0] not in ids:
                lines.append(("apply", op(node), [ref(v) for v in node.inputs], [of_type(v) for v in node.outputs]))
                for v in node.outputs:
                    ids[v] = len(ids)
        lines.append((name, call.kwargs["mode"], [ref(v) for v in call.inputs], [ref(v) for v in outputs],
                      [[ref(a), ref(b)] for a, b in givens]))
    settings = {name: str(getattr(config, name)) for name in config._config_var_dict if not name.startswith(_IRRELEVANT_SETTINGS)}
    content = pickle.dumps((lines, bool(model.check_bounds), sorted(settings.items()), sorted(_environment().items())), protocol=5)
    return hashlib.sha256(content).hexdigest()[:32], shared


# --- entries on disk ---------------------------------------------------------------------------


def compile_model(model, *, meanwhile=None):
    """``nutpie.compile_pymc_model(model)``, with the two callbacks loaded from the cache (built first if missing).

    ``meanwhile`` (no arguments) is called while a missing entry compiles in other processes, which leave this one
    idle: the caller's chance to prepare what comes after.

    Falls back to nutpie's own compile, after a one-line note on stderr, when nutpie's internals
    differ from what this module relies on, or this model or cache folder cannot be used. A model
    found by the index has no ``logp_func`` and ``expand_func`` (None): nutpie's PyTensor functions,
    which its sampler does not call, are never compiled then.
    """
    problem = nutpie_problem()
    if problem is None:
        try:
            graphs = _graphs(model)
            index = _index(model, graphs)
            found = index and _from_index(model, graphs, *index)
            if found:
                return found
            parts = _prepare(model, graphs)
            compiled = _compiled(parts, *_callbacks(model, parts, meanwhile))
            if index:
                _write_index(index[0], parts, index[1])
            return compiled
        except Exception as err:  # the cache must never be why a fit fails: nutpie's own compile decides
            problem = str(err) if isinstance(err, Uncacheable) else f"{type(err).__name__}: {err}"
    log.warning("compiling without the compile cache (%s)", problem)
    import nutpie

    return nutpie.compile_pymc_model(model)


def _index(model, graphs: _Graphs) -> tuple[Path, dict] | None:
    """Where the index names the entry of ``graphs``, and their shared variables by name; None for graphs it cannot key."""
    try:
        key, shared = _index_key(model, graphs)
    except Exception as err:  # an op without __props__, or props that cannot be pickled: never why a fit fails
        log.debug("the model is prepared in full each time: %s", err)
        return None
    return cache_root() / "index" / f"{key}.json", shared


def _from_index(model, graphs: _Graphs, path: Path, shared: dict):
    """The compiled model from the entry the index names for ``graphs``, without compiling them; None when the index
    has no (readable) record of them, or its entry is missing, untrusted or does not load: then the model is
    prepared in full, which rebuilds what has to be."""
    try:
        return _indexed(model, graphs, path, shared)
    except Exception as err:  # whatever went wrong, preparing the model in full decides
        log.debug("the index record %s cannot be used (%s: %s)", path, type(err).__name__, err)
        return None


def _indexed(model, graphs: _Graphs, path: Path, shared: dict):
    from nutpie import compile_pymc

    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    if record["format"] != FORMAT or not re.fullmatch(r"[0-9a-f]{32}", record["entry"]) \
            or (record["n_dim"], record["n_expanded"]) != (graphs.n_dim, graphs.n_expanded):
        return None
    entry = cache_root() / "callbacks" / record["entry"]
    shared_var_keys, shared_data, user_data = _shared([shared[name] for name in record["shared"]])
    if str(user_data.dtype) != record["record"]:  # the record layout the callbacks were generated for
        return None
    with _lock(entry, shared=True):
        source = (entry / "callbacks.py").read_text(encoding="utf-8")
        if _key(source) != entry.name or _untrusted(entry, entry.name, source) is not None:
            return None
        logp, expand = _load(entry, source)
    dims, coords = compile_pymc._prepare_dims_and_coords(model, graphs.shape_info, graphs.reparameterized_names)
    parts = _Parts(graphs.n_dim, graphs.n_expanded, None, None, graphs.initial_point, graphs.shape_info, graphs.reparameterized_names,
                   dims, coords, shared_data, shared_var_keys, user_data, source, entry.name)
    return _compiled(parts, logp, expand)


def _write_index(path: Path, parts: _Parts, shared: dict) -> None:
    """Record in the index that the graphs keyed ``path`` compile to the entry of ``parts`` (written whole or not at all)."""
    if any(shared.get(var.name) is not var for var in parts.shared_var_keys):
        return  # PyTensor compiled shared variables the graphs do not name: nothing to record
    record = {"format": FORMAT, "entry": parts.key, "shared": [var.name for var in parts.shared_var_keys], "record": str(parts.user_data.dtype),
              "n_dim": int(parts.n_dim), "n_expanded": int(parts.n_expanded)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp")
        temporary.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    except OSError as err:  # the next fit prepares the model in full again; this one has its callbacks
        log.debug("cannot record %s in the index: %s", path, err)


def _callbacks(model, parts: _Parts, meanwhile=None):
    """The two callbacks of ``parts`` loaded from their entry, which is built first when missing or untrusted."""
    entry = cache_root() / "callbacks" / parts.key
    inner = parts.logp_fn.vm.jit_fn, parts.expand_fn.vm.jit_fn
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise Uncacheable(f"cannot create {entry.parent}: {err.strerror}") from None
    with _lock(entry, shared=True):
        problem = _untrusted(entry, parts.key, parts.source)
        if problem is None:
            try:
                return _load(entry, parts.source, inner)
            except Exception as err:  # stale, unreadable or foreign: rebuilt below
                problem = f"numba cannot load it ({type(err).__name__})"
    with _lock(entry, shared=False):
        if _untrusted(entry, parts.key, parts.source) is None:  # built by another process while this one waited
            try:
                return _load(entry, parts.source, inner)
            except Exception as err:
                problem = f"numba cannot load it ({type(err).__name__})"
        payload = _payload(model)
        if entry.exists():
            log.warning("the compiled model in %s cannot be trusted (%s); compiling it again", entry, problem)
        log.warning(COLD_NOTE)
        _build(payload, parts, entry, meanwhile)
        try:
            return _load(entry, parts.source, inner)
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


def _untrusted(entry: Path, key: str, source: str) -> str | None:
    """Why the files of ``entry`` cannot be used as they are, or None: each must match its recorded SHA-256."""
    try:
        manifest = json.loads((entry / "manifest.json").read_text(encoding="utf-8"))
        files = manifest["files"]
        if manifest["key"] != key or files.get("callbacks.py") != hashlib.sha256(source.encode()).hexdigest():
            return "it belongs to another model"
        if _hashes(entry, files) != files:
            return "its files changed after it was built"
    except FileNotFoundError:
        return "it is incomplete" if entry.exists() else "it is missing"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "its manifest is unreadable"
    return None


def _module(entry: Path, source: str, inner=(None, None)) -> types.ModuleType:
    """``entry``'s generated source as a module, with ``inner`` (the numba functions of the two PyTensor graphs the
    callbacks call) set: only compiling needs them, what numba saved holds their code too."""
    path = entry / "callbacks.py"
    module = types.ModuleType(f"metaeval_callbacks_{entry.name}")
    module.__file__ = str(path)
    exec(compile(source, str(path), "exec"), module.__dict__)  # the file's own text: numba stamps the file
    sys.modules[module.__name__] = module  # numba names the module in what it saves, and imports it on loading
    module.logp_inner, module.expand_inner = inner
    return module


def _load(entry: Path, source: str, inner=(None, None)):
    """The two callbacks (logp, expand) of ``entry``, loaded from numba's disk cache; never compiled here."""
    import numba

    module = _module(entry, source, inner)
    return tuple(numba.cfunc(signature, cache=True, pipeline_class=_refuse_to_compile)(getattr(module, name))
                 for name, signature in CALLBACKS.items())


def _payload(model) -> bytes:
    """``model`` as the compile process reads it from its stdin."""
    import cloudpickle

    try:
        return cloudpickle.dumps(model)
    except Exception as err:
        raise Uncacheable(f"the model cannot be handed to a compile process ({type(err).__name__}: {err})") from None


def _build(payload: bytes, parts: _Parts, entry: Path, meanwhile=None) -> None:
    """Compile ``entry`` afresh in child processes given the model (numba saves the code), then record its files' hashes.

    With more than one CPU each callback has its own process, so the two compile side by side (the bundled model,
    cold PyTensor cache: logp 14 s, expand 3.9 s, one after the other in one process before).
    """
    from metaeval.executor import default_workers

    shutil.rmtree(entry, ignore_errors=True)
    entry.mkdir(parents=True)
    (entry / "callbacks.py").write_text(parts.source, encoding="utf-8")
    groups = [[name] for name in CALLBACKS] if default_workers() > 1 else [list(CALLBACKS)]
    with tempfile.TemporaryDirectory(prefix=f".{entry.name}-", dir=entry.parent) as scratch:  # the model and messages
        model = Path(scratch) / "model.pickle"
        model.write_bytes(payload)
        children = []
        try:
            for group in groups:
                with open(model, "rb") as stdin, open(Path(scratch) / f"{group[0]}.err", "wb") as stderr:
                    children.append((subprocess.Popen([sys.executable, "-m", "metaeval.compile_cache", str(entry), *group],
                                                      stdin=stdin, stdout=subprocess.DEVNULL, stderr=stderr), stderr.name))
            deadline = time.monotonic() + CHILD_TIMEOUT_S
            if meanwhile is not None:
                meanwhile()
            for child, _ in children:
                child.wait(timeout=max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            raise Uncacheable(f"the compile process took more than {CHILD_TIMEOUT_S} s") from None
        finally:  # a timeout, an interrupt: no compile process outlives this one
            for child, _ in children:
                if child.poll() is None:
                    child.kill()
                    child.wait()
        for child, errors in children:
            if child.returncode != 0:
                text = Path(errors).read_bytes().decode(errors="replace").strip().splitlines()
                raise Uncacheable(f"the compile process failed: {(text or [f'exit status {child.returncode}'])[-1]}")
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


def _child(entry: Path, names: list[str]) -> int:
    """The compile process: rebuild the parts of the model on stdin, check they make this entry, compile and save the
    callbacks ``names``."""
    import warnings

    import cloudpickle
    import numba
    from numba import NumbaWarning

    model = cloudpickle.loads(sys.stdin.buffer.read())
    parts = _prepare(model)
    if parts.key != entry.name or (entry / "callbacks.py").read_text(encoding="utf-8") != parts.source:
        print(f"the model rebuilt in the compile process has key {parts.key}, not {entry.name}", file=sys.stderr)
        return 3
    module = _module(entry, parts.source, (parts.logp_fn.vm.jit_fn, parts.expand_fn.vm.jit_fn))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Cannot cache", category=NumbaWarning)  # fail loudly, not silently uncached
        for name in names:
            numba.cfunc(CALLBACKS[name], cache=True)(getattr(module, name))
    return 0


if __name__ == "__main__":
    sys.exit(_child(Path(sys.argv[1]), sys.argv[2:]))
