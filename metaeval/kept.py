"""Results kept between commands: a typed result computed once per key and read back from a folder after.

A report made again from the same fit needs the same plan (:func:`metaeval.planning.plan`, most of a first
report's time) and the same comparison (:func:`metaeval.ranking.compare`, whose intervals import ArviZ's
statistics: a quarter of a report's time on a cached fit). Each is kept in ``OUT/kept`` under a hash of
everything it is computed from, this code included (:func:`code_digest`), so a changed input or a changed
metaeval never finds an old one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from pathlib import Path

from pydantic import BaseModel


def kept[M: BaseModel](folder: str | Path | None, key: Callable[[], str], kind: type[M], compute: Callable[[], M]) -> M:
    """``folder/<key()>.json`` read as a ``kind``; else ``compute()``, written there (atomically) and returned.

    ``folder`` None: computed, nothing kept (and no key hashed). A missing, damaged or unreadable file is computed again and
    rewritten; a folder that cannot be written leaves the result computed all the same.
    """
    if folder is None:
        return compute()
    path = Path(folder) / f"{key()}.json"
    try:
        return kind.model_validate_json(path.read_bytes())
    except (OSError, ValueError):  # not there, or unreadable: computed and kept below
        pass
    result = compute()
    from metaeval.files import write_atomic

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, result.model_dump_json())
    except OSError:  # a cache: the next command computes it again
        pass
    return result


def key_of(options, parts: Iterable[bytes] = ()) -> str:
    """A hash of what a kept result is computed from: ``options`` (by their repr) and ``parts`` (bytes, in order),
    with metaeval's own code (:func:`code_digest`)."""
    import hashlib

    digest = hashlib.sha256(repr((options, code_digest())).encode())
    for part in parts:
        digest.update(part)
    return digest.hexdigest()[:32]


@functools.cache
def code_digest() -> str:
    """A hash of the source of every metaeval module."""
    import hashlib
    from importlib import resources

    digest = hashlib.sha256()
    for path in sorted((p for p in resources.files("metaeval").iterdir() if p.name.endswith(".py")), key=lambda p: p.name):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()
