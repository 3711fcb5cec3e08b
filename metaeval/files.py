"""Reading and writing files safely: bounded reads; writes inside the output folder, atomic, and one set at a time.

- :func:`read_regular`: the bytes of a regular file within a size limit; a FIFO, device or socket is refused,
  never waited on or read without end.
- :func:`atomic_path` / :func:`write_atomic`: one file, written beside its target and renamed over it, so a
  run killed at any moment leaves the previous file intact. The target must be a regular file (or absent):
  a device, FIFO or directory is never replaced.
- :func:`result_set`: a set of files (a run's summary, table and report; a fit's posterior and record)
  written into a fresh folder and switched in by one atomic rename of a pointer, a relative symlink
  (``OUT/current -> .versions/current/<id>``), so a reader sees the previous complete set or the new one,
  never a mix, whatever happens (kill, full disk, error) in between. A damaged pointer (a directory or file
  where the link should be) is moved aside, never trusted and never a permanent failure.
- :func:`confine`: while active, every write must land inside the given folders (or be one of the given
  files) once symlinks are followed; :func:`safe_name` makes a file name from data (a domain id) that cannot
  leave its folder.
- :func:`safe_csv` / :func:`defuse_cell`: exported text cells that a spreadsheet would run as a formula.

Test hooks (``METAEVAL_TEST_*``, read by :func:`checkpoint`) let tests/test_kill_points.py trace, freeze or fail
the process at every step of a write. Unset (always, outside tests), they do nothing.
"""

from __future__ import annotations

import contextvars
import glob
import hashlib
import logging
import os
import re
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from metaeval.errors import InputError, Problem

log = logging.getLogger(__name__)

#: Part of every temporary file's name (with the writer's pid), so orphans are told from live writers' files.
_HOST = socket.gethostname()
#: Where the versions of a pointer's sets live, beside the pointer: ``<parent>/.versions/<pointer name>/<id>``.
VERSIONS = ".versions"
#: A superseded set younger than this is kept (a concurrent writer may be about to point at it, a reader reading it).
_KEEP_SECONDS = 60.0


class OutputRefused(InputError):
    """A write that would leave the output folder or replace something that is not a regular file (exit 2)."""


# --- confinement -------------------------------------------------------------------------------------------

_ALLOWED: contextvars.ContextVar[tuple[tuple[Path, ...], tuple[Path, ...]] | None] = contextvars.ContextVar("metaeval_allowed_outputs", default=None)


def _real(path: Path, *, folder: bool = False) -> Path:
    """``path`` with every symlink of its existing part followed; a file's own name is left as it is.

    A write replaces a file's name (the atomic rename replaces a symlink, not what it points to), so the
    name's own link does not decide where the bytes go; its folder's links do. A ``folder`` is written
    into, so its own link counts too.
    """
    path = Path(os.path.abspath(path))
    return path.resolve() if folder else path.parent.resolve() / path.name


def inside(path: str | Path, root: str | Path, *, folder: bool = False) -> bool:
    """Whether ``path`` (a file, or a ``folder`` written into) lies in ``root`` once symlinks are followed."""
    real, top = _real(Path(path), folder=folder), Path(root).resolve()
    return real == top or top in real.parents


@contextmanager
def confine(*folders: str | Path, files: Iterable[str | Path] = ()) -> Iterator[None]:
    """While active, :func:`atomic_path` and :func:`result_set` write only inside ``folders`` or to ``files``."""
    roots = tuple(Path(f).resolve() for f in folders)
    exact = tuple(_real(Path(f)) for f in files)
    token = _ALLOWED.set((roots, exact))
    try:
        yield
    finally:
        _ALLOWED.reset(token)


def check_allowed(path: str | Path, *, folder: bool = False) -> None:
    """Refuse ``path`` (a file, or a ``folder`` written into) when a :func:`confine` is active and it lies outside."""
    allowed = _ALLOWED.get()
    if allowed is None:
        return
    roots, exact = allowed
    real = _real(Path(path), folder=folder)
    if real in exact or any(real == r or r in real.parents for r in roots) or (folder and any(real == f.parent for f in exact)):
        return
    where = ", ".join(str(r) for r in roots) or ", ".join(str(f) for f in exact)
    raise OutputRefused(Problem(str(path), "", "", f"refused: this write would land at {real}, outside the output folder "
                                                  f"({where}); a symlink on the way leads out of it. Nothing was written there"))


def _check_replaceable(path: Path) -> None:
    """Refuse to replace anything but a regular file (following symlinks): never a device, FIFO, socket or folder."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as err:
        raise OutputRefused(Problem(str(path), "", "", f"cannot be written: {err.strerror}")) from None
    if not stat.S_ISREG(mode):
        raise OutputRefused(Problem(str(path), "", "", f"refused: it is {describe_mode(mode)}, not a regular file; nothing was written"))


def describe_mode(mode: int) -> str:
    """What a file of this mode is, in words (for messages)."""
    for test, words in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                        (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISREG, "a regular file")):
        if test(mode):
            return words
    return "not a regular file"


def _mkdir(folder: Path) -> None:
    """Create ``folder`` (and parents) after checking that it stays where writes are allowed."""
    check_allowed(folder, folder=True)
    folder.mkdir(parents=True, exist_ok=True)
    check_allowed(folder, folder=True)  # a link made meanwhile on the way is caught here


_UNSAFE = re.compile(r"[^\w.\-]+")


def safe_name(text: str, *, limit: int = 80) -> str:
    """A file-name part made from ``text`` (a domain or project id) that cannot name another folder.

    Letters, digits, ``_``, ``.`` and ``-`` are kept; anything else (``/``, ``..`` at the start, spaces, control
    characters) becomes ``_``. When the name had to change, a short hash of the original is appended so that two
    ids that differ only in such characters still get two files.
    """
    text = str(text)
    name = _UNSAFE.sub("_", text).lstrip(".")[:limit] or "_"
    if name != text:
        name += "-" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return name


def check_output_file(path: str | Path, option: str) -> None:
    """Refuse, before any work, an output file that is a directory, device, FIFO or socket, or cannot be written."""
    path = Path(path)
    _check_replaceable(path)
    parent = path.parent if str(path.parent) else Path(".")
    if parent.exists():
        probe_writable(parent, option)


def probe_writable(folder: str | Path, option: str) -> None:
    """Create and remove a file in ``folder``, or in its nearest existing parent when it is still to be made:
    a read-only or immutable folder fails here, before a fit whose result could not be saved."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise OutputRefused(Problem(str(existing), "", option, "is an existing file; expected an output folder"))
        fd, probe = tempfile.mkstemp(dir=existing, prefix=f".probe.{_HOST}-{os.getpid()}.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputRefused(Problem(str(folder), "", option, f"cannot be written ({err.strerror} in {existing}); nothing was run. "
                                                             "Choose a folder you can write to")) from None


# --- reading ---------------------------------------------------------------------------------------------------


class Unreadable(Exception):
    """A file that is not read: not a regular file, too large, or the system refused (``reason`` says which)."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


def read_regular(path: str | Path, limit: int) -> bytes:
    """The bytes of the regular file ``path`` (symlinks followed), at most ``limit`` of them.

    Never blocks and never reads without end: a FIFO, socket or device (``/dev/zero``, ``/dev/stdin``) is
    refused before it is read (the file is opened non-blocking, and checked again once open), and so is a
    file larger than ``limit`` bytes, by its size and by what is actually read.
    """
    def refuse(mode: int):
        return Unreadable(f"is {describe_mode(mode)}; only regular files are read")

    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise refuse(mode)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise Unreadable("file not found") from None
    except OSError as err:
        raise Unreadable(f"cannot be read: {err.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # replaced between the two looks
            raise refuse(info.st_mode)
        if info.st_size > limit:
            raise Unreadable(f"is {info.st_size:,} bytes; files of at most {limit:,} bytes are read (a limit no real input reaches)")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise Unreadable(f"grew beyond {limit:,} bytes while being read; files of at most {limit:,} bytes are read")
        return b"".join(chunks)
    except OSError as err:
        raise Unreadable(f"cannot be read: {err.strerror}") from None
    finally:
        os.close(fd)


# --- one file ------------------------------------------------------------------------------------------------


def read_json_object(path: str | Path, limit: int) -> dict | None:
    """The JSON object in the regular file ``path`` (at most ``limit`` bytes), or None when it is missing,
    unreadable, too large, not JSON or not an object: for records metaeval wrote itself and will redo if lost."""
    import json

    try:
        data = json.loads(read_regular(path, limit).decode("utf-8"))
    except (Unreadable, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed over ``path``.

    On any error (or interruption) the temporary file is removed and ``path`` is untouched. A process
    killed outright (SIGKILL) cannot remove its temporary file; the next write of ``path`` on this
    machine removes it (the name carries host and process id, and only dead writers' files go).
    ``path`` must be a regular file or absent, and inside the folders a :func:`confine` allows.
    """
    path = Path(path)
    check_allowed(path)
    _mkdir(path.parent)
    _check_replaceable(path)
    _remove_orphans(path.parent, f".{path.name}.{_HOST}-", ".tmp")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_HOST}-{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        checkpoint(f"rename:{path.name}", Path(tmp))
        _check_replaceable(path)  # the target may have changed while the file was written
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    checkpoint(f"renamed:{path.name}")


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def _remove_orphans(folder: Path, prefix: str, suffix: str) -> None:
    """Delete temporary files and folders ``<prefix><pid>.*<suffix>`` left by writers on this host that no longer run."""
    try:
        entries = list(folder.glob(f"{glob.escape(prefix)}*{glob.escape(suffix)}"))
    except OSError:
        return
    for tmp in entries:
        pid = tmp.name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            _remove(tmp)


def _remove(path: Path) -> None:
    """Remove a file, link or folder tree, ignoring what is already gone."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- a set of files: one transaction ---------------------------------------------------------------------------


def _version_id() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{time.time_ns() % 10**9:09d}-{os.getpid()}"


@contextmanager
def result_set(pointer: str | Path) -> Iterator[Path]:
    """Yield a fresh, empty folder; when the block succeeds, the folder becomes what ``pointer`` names.

    The folder is ``<parent>/.versions/<name>/<id>`` and ``pointer`` a relative symlink to it, replaced in one
    atomic rename: a reader following ``pointer`` finds the previous complete set or this one. On any error or
    interruption the folder is removed and ``pointer`` is untouched; a SIGKILL leaves a hidden staging folder
    that the next write of the same pointer removes. Superseded versions are removed, except the previous one
    and any younger than a minute (a concurrent reader may still use it).
    """
    pointer = Path(pointer)
    store = pointer.parent / VERSIONS / pointer.name
    _mkdir(store)
    _remove_orphans(store, f".{_HOST}-", ".tmp")
    staging = Path(tempfile.mkdtemp(dir=store, prefix=f".{_HOST}-{os.getpid()}.", suffix=".tmp"))
    os.chmod(staging, 0o777 & ~_umask())
    try:
        yield staging
        checkpoint(f"staged:{pointer.name}", staging)
        for item in staging.iterdir():
            if item.is_file():
                with open(item, "rb") as fh:
                    os.fsync(fh.fileno())
        _fsync_dir(staging)
        final = store / _version_id()
        os.rename(staging, final)
        _fsync_dir(store)
    except BaseException:
        _remove(staging)
        raise
    previous = current_version(pointer)
    checkpoint(f"switch:{pointer.name}", final)
    switch(pointer, final)
    _SWITCHED.append(pointer)
    checkpoint(f"switched:{pointer.name}")
    _prune(store, keep={final, previous})


#: The pointers this process switched (for the message of a command stopped by a signal).
_SWITCHED: list[Path] = []


def switched() -> list[Path]:
    """The result sets this process has switched in so far (:func:`result_set`), oldest first."""
    return list(_SWITCHED)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def switch(pointer: Path, target: Path) -> None:
    """Make ``pointer`` a relative symlink to ``target`` in one atomic rename.

    Anything else at ``pointer`` (a folder or file left by an older version, or put there by hand) is moved aside
    to ``.aside-<name>-<id>`` first, with a logged note: never deleted, never trusted.
    """
    check_allowed(pointer)
    link = pointer.parent / f".{pointer.name}.{_HOST}-{os.getpid()}.{time.time_ns()}.link"
    os.symlink(os.path.relpath(target, pointer.parent), link)
    try:
        try:
            os.replace(link, pointer)
        except OSError:  # a folder at the pointer (IsADirectoryError, or not empty)
            aside = pointer.parent / f".aside-{pointer.name}-{_version_id()}"
            os.rename(pointer, aside)
            log.warning("%s was not a result metaeval wrote; moved aside to %s", pointer, aside)
            os.replace(link, pointer)
    except BaseException:
        link.unlink(missing_ok=True)
        raise
    _fsync_dir(pointer.parent)


def current_version(pointer: str | Path) -> Path | None:
    """The folder ``pointer`` leads to, resolved, when it is one of its own versions (else None)."""
    pointer = Path(pointer)
    if not pointer.is_symlink():
        return None
    real = pointer.resolve()
    store = (pointer.parent / VERSIONS / pointer.name).resolve()
    return real if real.parent == store and real.is_dir() else None


def _prune(store: Path, keep: set) -> None:
    now = time.time()
    try:
        versions = [p for p in store.iterdir() if not p.name.startswith(".")]
    except OSError:
        return
    for version in versions:
        try:
            young = now - version.lstat().st_mtime < _KEEP_SECONDS
        except OSError:
            continue
        if version not in keep and not young:
            _remove(version)


def link_names(out: str | Path, pointer: str, names: Iterable[str]) -> None:
    """Give each file of the set at ``OUT/<pointer>`` a stable name at the top of ``OUT``: ``OUT/<name> -> <pointer>/<name>``.

    The links never change once made, so switching the pointer switches all of them at once.
    """
    out = Path(out)
    _mkdir(out)
    for name in names:
        link = out / name
        want = f"{pointer}/{name}"
        if link.is_symlink() and os.readlink(link) == want:
            continue
        tmp = out / f".{name}.{_HOST}-{os.getpid()}.link"
        tmp.unlink(missing_ok=True)
        os.symlink(want, tmp)
        try:
            check_allowed(link)
            if link.is_dir() and not link.is_symlink():  # a folder where a result file belongs: kept, out of the way
                os.rename(link, out / f".aside-{name}-{_version_id()}")
            os.replace(tmp, link)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def drop_dangling_links(out: str | Path, pointer: str, names: Iterable[str]) -> None:
    """Remove the links ``OUT/<name> -> <pointer>/<name>`` that lead nowhere (the current set has no such file)."""
    out = Path(out)
    for name in names:
        link = out / name
        if link.is_symlink() and os.readlink(link) == f"{pointer}/{name}" and not link.exists():
            link.unlink(missing_ok=True)


# --- test hooks ------------------------------------------------------------------------------------------------

_CHECKPOINTS = 0


def checkpoint(point: str, path: Path | None = None) -> None:
    """Test hook (tests/test_faults.py): record or freeze at a named step of a write.

    ``METAEVAL_TEST_TRACE=<file>`` appends each step's name to the file. ``METAEVAL_TEST_PAUSE_AT=<step>`` (a
    name such as ``rename:report.html`` or ``switch:current``, or ``#N`` for the N-th step) with
    ``METAEVAL_TEST_PAUSE_MARKER=<path>``: at that step, write the path being written (or the step) to the
    marker and sleep, so a test can SIGKILL the process there. ``METAEVAL_TEST_PAUSE_BEFORE_RENAME=<file name>``
    is ``PAUSE_AT=rename:<file name>``. ``METAEVAL_TEST_FAIL_AT=#N`` raises the error a full disk gives
    (ENOSPC) at the N-th step. Unset (always, outside tests), this does nothing.
    """
    global _CHECKPOINTS
    _CHECKPOINTS += 1
    trace = os.environ.get("METAEVAL_TEST_TRACE")
    if trace:
        with open(trace, "a", encoding="utf-8") as fh:
            fh.write(point + "\n")
    if os.environ.get("METAEVAL_TEST_FAIL_AT") == f"#{_CHECKPOINTS}":
        import errno

        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path) if path is not None else point)
    marker = os.environ.get("METAEVAL_TEST_PAUSE_MARKER")
    at = os.environ.get("METAEVAL_TEST_PAUSE_AT") or (
        f"rename:{os.environ['METAEVAL_TEST_PAUSE_BEFORE_RENAME']}" if os.environ.get("METAEVAL_TEST_PAUSE_BEFORE_RENAME") else "")
    if not at or not marker or Path(marker).exists():
        return
    if at != point and at != f"#{_CHECKPOINTS}":
        return
    Path(marker).write_text(str(path) if path is not None else point)
    time.sleep(600)


# --- CSV -----------------------------------------------------------------------------------------------------

#: Text cells a spreadsheet would run as a formula (OWASP "CSV injection"); exported with a leading '.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def defuse_cell(value):
    """A text cell that cannot act as a spreadsheet formula; numbers (and text that is a plain number) unchanged."""
    if isinstance(value, str) and value.lstrip(" ").startswith(FORMULA_START) and not _is_number(value):
        return "'" + value
    return value


def safe_csv(frame) -> str:
    """A DataFrame as CSV text with every text cell defused, in every column (numbers untouched)."""
    from pandas.api.types import is_numeric_dtype

    frame = frame.copy()
    for col in frame.columns:
        if not is_numeric_dtype(frame[col]):
            frame[col] = frame[col].map(defuse_cell)
    return frame.to_csv(index=False, lineterminator="\n")
