# Two commands do everything on a fresh machine:
#   make sample   set up .venv (torch first, then the package with its test extras) and run `kdpm2 sample`
#   make test     set up .venv and run the whole test suite (parity against diffusers/k-diffusion included)
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# Where torch comes from. On Linux a standard index serves torch==2.13.0 as a CUDA build of several
# GB; for the CPU build pass PyTorch's CPU index, e.g. TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
TORCH_INDEX_URL ?=
TORCH_INDEX := $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL),)
# The suite as on another x86-64 CPU: torch's portable (non-SIMD) kernels, OpenBLAS's Haswell
# kernels, NumPy without its AVX-512 loops, one thread per math library. Models, BLAS and
# transcendental functions then round differently in the last bits, as they do between machines.
FOREIGN_CPU := ATEN_CPU_CAPABILITY=default OPENBLAS_CORETYPE=Haswell \
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
	NPY_DISABLE_CPU_FEATURES="AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR"

.PHONY: setup sample test test-foreign-cpu lint bench test-no-torch

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml tests/parity/requirements-nodeps.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: an unpinned torch pulled in by a dependency may be a newer, multi-GB CUDA build
	$(PY) -m pip install -q $(TORCH_INDEX) torch==2.13.0
	$(PY) -m pip install -q -e ".[test,dev]"
	$(PY) -m pip install -q --no-deps -r tests/parity/requirements-nodeps.txt
	touch $@

sample: setup
	$(VENV)/bin/kdpm2 sample

test: setup
	$(PY) -m pytest

test-foreign-cpu: setup
	env $(FOREIGN_CPU) $(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/pyright

bench: setup
	$(PY) benchmarks/bench.py

# The NumPy-only path: a second environment without torch.
test-no-torch:
	$(PYTHON) -m venv $(VENV)-notorch
	$(VENV)-notorch/bin/pip install -q --upgrade pip
	$(VENV)-notorch/bin/pip install -q -e ".[cli]" pytest hypothesis scipy scikit-learn sybil
	$(VENV)-notorch/bin/python -m pytest
