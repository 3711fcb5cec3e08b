"""Test-suite settings shared by every test module."""

import os

from hypothesis import settings

# CI explores the same examples on every run (a landing must not depend on luck); developers' runs
# explore fresh ones, and hypothesis keeps any failure it finds in its local database.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
