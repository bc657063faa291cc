# Two commands for a fresh machine:  make demo  |  make test
# Both create/update .venv in this checkout, install torch the way this machine
# needs it (pinned CPU wheel first, so nothing drags in a CUDA build), then the package.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint typecheck unit jstest browser-deps node-deps clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
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
	$(VENV)/bin/ruff check lightning_stream tests examples benchmarks
	$(VENV)/bin/ruff format --check lightning_stream tests examples benchmarks

typecheck: setup
	$(VENV)/bin/mypy

unit: setup browser-deps
	$(VENV)/bin/pytest

# the dashboard's pure ES modules (lightning_stream/static/js), Node's own test runner, no npm packages
jstest: node-deps
	node --test tests/js

test: lint typecheck unit jstest

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
