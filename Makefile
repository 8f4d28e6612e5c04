# Two commands do everything on a fresh machine:
#   make sample   set up .venv (torch CPU first, then the package with its test extras) and run `kdpm2 sample`
#   make test     set up .venv and run the whole test suite (parity against diffusers/k-diffusion included)
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: setup sample test lint bench test-no-torch

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml tests/parity/requirements-nodeps.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the CPU wheel first: an unpinned torch would pull a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,dev]"
	$(PY) -m pip install -q --no-deps -r tests/parity/requirements-nodeps.txt
	touch $@

sample: setup
	$(VENV)/bin/kdpm2 sample

test: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/pyright

bench: setup
	$(PY) benchmarks/bench.py

# The NumPy-only path: a second environment without torch.
test-no-torch:
	$(PYTHON) -m venv $(VENV)-notorch
	$(VENV)-notorch/bin/pip install -q --upgrade pip
	$(VENV)-notorch/bin/pip install -q -e ".[cli]" pytest hypothesis scipy scikit-learn
	$(VENV)-notorch/bin/python -m pytest
