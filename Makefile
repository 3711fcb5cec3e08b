# Two entry points, each doing its own set-up: `make run` (the main job) and `make test` (the whole suite).
# The environment is built from requirements.lock (exact pins) with Python 3.12 and rebuilt when the lock changes.

VENV   := .venv
BIN    := $(VENV)/bin
PYTHON ?= $(shell for p in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12 /usr/local/bin/python3.12 /usr/bin/python3.12; do \
            "$$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && { echo "$$p"; break; }; done)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test test-fast env browser clean

$(VENV)/.installed: requirements.lock pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.12 not found: install it (e.g. pyenv install 3.12) or pass PYTHON=/path/to/python3.12"; exit 1; }
	@echo "metaeval: setting up $(VENV) with $(PYTHON) (the first time only: a few minutes, mostly downloads)"
	"$(PYTHON)" -m venv $(VENV)
	$(BIN)/python -m pip install --progress-bar off -r requirements.lock  # its lines are the progress
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m compileall -q metaeval  # the bytecode pip writes for an installed wheel; where PYTHONDONTWRITEBYTECODE is set, each command compiled every module again
	$(BIN)/python -c "import metaeval, pymc, arviz"
	@touch $@

env: $(VENV)/.installed

# The first run compiles the model into the compile cache (~/.cache/metaeval; about 20 s, and metaeval says so);
# every later fit of a model of this shape loads it and starts in seconds.
run: $(VENV)/.installed
	$(BIN)/metaeval run

# The report's browser test needs Debian's headless Chromium.
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: $(VENV)/.installed browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 2

# The developer's fast loop: the unit tests, without MCMC fits, other processes, notebooks, Chromium or the
# long statistical checks (each test's cost marker is registered in pyproject.toml). One to two minutes on two cores.
FAST := not slow and not mcmc and not subprocess and not notebook and not browser
test-fast: $(VENV)/.installed
	$(BIN)/python -m pytest -n 2 -q -m "$(FAST)"

clean:
	rm -rf $(VENV) metaeval-out
