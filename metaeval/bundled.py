"""The files metaeval ships, found through :mod:`importlib.resources` so an installed wheel works from any folder.

- ``data/``: the bundled evidence base (domains, projects, costs, the source excerpts and ``README.md``);
- ``models/``: the model files ``--model NAME`` names;
- ``records/``: the recorded studies the report cites: the simulation-based calibration of the default
  model (``sbc.json``, ``sbc_ranks.png``, written by ``bench/sbc.py``) and what the appraisal rules move on the
  bundled evidence (``rules.json``, written by ``bench/rules.py``).

In a checkout the top-level ``data`` and ``models`` are symlinks to ``metaeval/data`` and ``metaeval/models``,
the place to edit them; the files themselves live in the package so that a wheel or sdist holds real files.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
from importlib import resources
from pathlib import Path

_extracted = contextlib.ExitStack()
atexit.register(_extracted.close)


@functools.cache
def bundled_path(name: str) -> Path:
    """A file system path to the shipped folder or file ``name`` (``"data"``, ``"models"``, ``"records/sbc.json"``).

    Installed as files (a wheel, an editable install) this is the file itself; from a zipped install
    importlib.resources extracts it to a temporary folder that lasts until the process ends.
    """
    return _extracted.enter_context(resources.as_file(resources.files("metaeval").joinpath(*name.split("/"))))
