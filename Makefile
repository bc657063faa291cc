# Two commands for a fresh machine:  make demo  |  make test
# Both create/update .venv in this checkout, install torch the way this machine
# needs it (pinned CPU wheel first, so nothing drags in a CUDA build), then the package.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# Sessions of noxfile.py that `make test` runs after the full 3.11 suite: the torch-free suite on the oldest
# and newest Python we claim, and the built sdist/wheel installed into fresh venvs. A session whose interpreter
# is not on this machine is skipped (nox says so); one that is present and red fails `make test`.
MATRIX := torchfree-3.10 torchfree-3.13 artifacts

.PHONY: setup demo test lint typecheck unit jstest matrix browser-deps node-deps clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile lightning_stream/_speedups.c  # the C extension is built by the editable install
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[lightning,test,bench]'
	$(PY) -m pip install -q "pytorch-lightning==$$($(PY) -c 'from importlib.metadata import version; print(version("lightning"))')"
	touch $(STAMP)

demo: setup
	$(PY) examples/train_with_stream.py

browser-deps:
	@bash scripts/ensure-chromium.sh

node-deps:
	@bash scripts/ensure-node.sh

lint: setup
	$(VENV)/bin/ruff check lightning_stream tests examples benchmarks scripts noxfile.py
	$(VENV)/bin/ruff format --check lightning_stream tests examples benchmarks scripts noxfile.py

typecheck: setup
	$(VENV)/bin/mypy

# The full suite on 3.11 (what `nox -s full-3.11` runs, in .venv so torch is installed once); torch must be there.
unit: setup browser-deps
	LIGHTNING_STREAM_REQUIRE_TORCH=1 $(VENV)/bin/pytest

# the dashboard's pure ES modules (lightning_stream/static/js), Node's own test runner, no npm packages
jstest: node-deps
	node --test tests/js

matrix: setup
	$(VENV)/bin/nox --no-error-on-missing-interpreters -s $(MATRIX)

test: lint typecheck unit jstest matrix

clean:
	rm -rf $(VENV) .nox build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
