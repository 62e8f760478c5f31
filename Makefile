# Two commands for a newcomer: `make demo` (install, then run the main job) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(PY):
	python3 -m venv $(VENV)

# torch is pinned to the CPU build that lies on this machine's disk; a bare `torch` would pull a CUDA build.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,all]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m neural_persistence.demo $(if $(FAST),--fast,)

test: $(STAMP)
	$(PY) -m mypy
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/kernel.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache .mypy_cache
