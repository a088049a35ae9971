# All set-up happens here: every target creates the virtual environment it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
JOBS ?= 2

.PHONY: demo test test-fast test-cuda test-boundscheck bench diagnostics lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,plot,examples,mpi,safetensors]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m minitorch train --dataset split --backend fast --hidden 100 --epochs 100 --lr 0.5 --batch 10 --points 50 --plot docs/demo.png

# The suite runs three times: everything on the CPU; the CUDA tests under numba's
# simulator; the kernel tests with bounds checking, in a fresh kernel cache (numba's
# cache ignores NUMBA_BOUNDSCHECK, so cached unchecked kernels would be reused), less
# those marked not_boundschecked (reports and reruns that add no bounds coverage).
# The first run includes the MPI tests (2 and 3 ranks under the venv's mpiexec), which
# MINITORCH_REQUIRE_MPI=1 turns from skipped into failed if MPI is missing, and the
# compile of every CUDA kernel to PTX (MINITORCH_REQUIRE_PTX=1: failed if NVVM is missing).
BOUNDSCHECK_CACHE := .minitorch_cache/boundscheck
# Each run lists its slowest tests: `make test` must stay under 15 minutes on 2 cores.

test: $(STAMP)
	$(PY) -m ruff check minitorch tests examples tools
	MINITORCH_REQUIRE_MPI=1 MINITORCH_REQUIRE_PTX=1 $(PY) -m pytest -q -n $(JOBS) -p no:cacheprovider --durations=15
	NUMBA_ENABLE_CUDASIM=1 $(PY) -m pytest -q -n $(JOBS) -p no:cacheprovider --durations=15 -m cuda tests
	rm -rf $(BOUNDSCHECK_CACHE)
	NUMBA_BOUNDSCHECK=1 NUMBA_CACHE_DIR=$(BOUNDSCHECK_CACHE) MINITORCH_CACHE_DIR=$(BOUNDSCHECK_CACHE) \
		$(PY) -m pytest -q -n $(JOBS) -p no:cacheprovider --durations=15 -m "kernels and not not_boundschecked" tests

# PyTorch is for comparison only: the CPU build named here, never a runtime dependency.
bench: $(STAMP)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m minitorch bench --output docs/benchmarks.md

diagnostics: $(STAMP)
	$(PY) -m minitorch diagnostics

lint: $(STAMP)
	$(PY) -m ruff check minitorch tests examples tools

clean:
	rm -rf $(VENV) .minitorch_cache .pytest_cache
