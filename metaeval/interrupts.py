"""Stopping a command on SIGINT or SIGTERM: exit 130 or 143, one line on stderr, no traceback.

:func:`installed` (entered first thing by the ``metaeval`` command, never on import) makes both signals raise
:class:`Interrupted` in the main thread. It derives from ``BaseException`` and not from ``KeyboardInterrupt``,
so neither an ``except Exception`` nor a library that turns Ctrl-C into "return what you have so far"
(nutpie returns the partial draws on ``KeyboardInterrupt``) can make an interrupted fit look like a result.
Code that catches broadly calls :func:`check` to re-raise a signal that was swallowed on the way.

Every write is atomic (:mod:`metaeval.files`), so unwinding leaves the previous results as they were. A second
signal while the first one unwinds ends the process at once (``os._exit``): temporary files left then are
removed by the next run. A signal before the handlers are in place (the first tenths of a second, while the
interpreter starts and imports the command) gets Python's default treatment; nothing has been written by then.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_received: int | None = None


class Interrupted(BaseException):
    """The command was asked to stop by a signal."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_status(self) -> int:
        """The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum

    @property
    def what(self) -> str:
        return "interrupted (Ctrl-C)" if self.signum == signal.SIGINT else f"stopped by {signal.Signals(self.signum).name}"

    @property
    def message(self) -> str:
        return f"{self.what}: nothing new was kept; earlier results are as they were"


def _handler(signum, frame) -> None:
    global _received
    if _received is not None:  # a second signal while the first one unwinds: leave now
        os.write(2, f"{Interrupted(signum).message}\n".encode())
        os._exit(128 + signum)
    _received = signum
    raise Interrupted(signum)


@contextmanager
def installed() -> Iterator[None]:
    """While active, SIGINT and SIGTERM raise :class:`Interrupted`; the previous handlers come back after, and the
    signal received is forgotten.

    Only in the main thread (Python runs signal handlers there); elsewhere this does nothing.
    """
    global _received
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received = None
    previous = {signum: signal.signal(signum, _handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _received = None  # the signal belonged to this command: later code in the process (an API call) is not stopped by it


def received() -> int | None:
    """The signal that asked this process to stop, if any."""
    return _received


def check() -> None:
    """Raise :class:`Interrupted` again if a signal arrived (after code that may have swallowed it)."""
    if _received is not None:
        raise Interrupted(_received)
