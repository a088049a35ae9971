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
	$(PY) -m pip install --quiet -e ".[test,plot,examples]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m minitorch train --dataset split --backend fast --hidden 100 --epochs 100 --lr 0.5 --batch 10 --points 50 --plot docs/demo.png

test: $(STAMP)
	$(PY) -m ruff check minitorch tests benchmarks examples
	$(PY) -m pytest -q -n $(JOBS) -p no:cacheprovider
	NUMBA_ENABLE_CUDASIM=1 $(PY) -m pytest -q -n $(JOBS) -p no:cacheprovider -m cuda tests
	NUMBA_BOUNDSCHECK=1 $(PY) -m pytest -q -n $(JOBS) -p no:cacheprovider -m kernels tests

bench: $(STAMP)
	$(PY) -m minitorch bench --output docs/benchmarks.md

diagnostics: $(STAMP)
	$(PY) -m minitorch diagnostics

lint: $(STAMP)
	$(PY) -m ruff check minitorch tests benchmarks examples

clean:
	rm -rf $(VENV) .minitorch_cache .pytest_cache
