"""Writing output files so that a run killed at any moment leaves the previous file intact."""

from __future__ import annotations

import glob
import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Part of every temporary file's name (with the writer's pid), so orphans are told from live writers' files.
_HOST = socket.gethostname()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed over ``path``.

    On any error (or interruption) the temporary file is removed and ``path`` is untouched. A process
    killed outright (SIGKILL) cannot remove its temporary file; the next write of ``path`` on this
    machine removes it (the name carries host and process id, and only dead writers' files go).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_HOST}-{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        _test_pause(path, Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _remove_orphans(path: Path) -> None:
    """Delete temporary files of ``path`` left by writers on this host that no longer run."""
    prefix = f".{path.name}.{_HOST}-"
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        pid = tmp.name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _test_pause(path: Path, tmp: Path) -> None:
    """Test hook (tests/test_faults.py): freeze between writing the temporary file and the rename.

    With ``METAEVAL_TEST_PAUSE_BEFORE_RENAME=<file name>`` and ``METAEVAL_TEST_PAUSE_MARKER=<path>``, the
    first write of a file with that name writes the temporary file's path to the marker and sleeps, so a
    test can SIGKILL the process at the worst moment. Unset (always, outside tests), this does nothing.
    """
    name = os.environ.get("METAEVAL_TEST_PAUSE_BEFORE_RENAME")
    marker = os.environ.get("METAEVAL_TEST_PAUSE_MARKER")
    if not name or not marker or path.name != name or Path(marker).exists():
        return
    import time

    Path(marker).write_text(str(tmp))
    time.sleep(600)


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


#: Text cells a spreadsheet would run as a formula (OWASP "CSV injection"); exported with a leading '.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def defuse_cell(value):
    """A text cell that cannot act as a spreadsheet formula; other values unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def safe_csv(frame) -> str:
    """A DataFrame as CSV text with every text cell defused (numbers, negative ones included, untouched)."""
    frame = frame.copy()
    for col in frame.columns:
        if not any(isinstance(v, (int, float)) and not isinstance(v, bool) for v in frame[col].dropna()):
            frame[col] = frame[col].map(defuse_cell)
    return frame.to_csv(index=False, lineterminator="\n")
