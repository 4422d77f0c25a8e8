# Two commands on a fresh machine: `make demo` and `make test`.
# Every pip install is constrained to the tested versions in constraints.txt (pyproject.toml keeps
# ranges for library users); the install stamps depend on both files, so editing either reinstalls.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
CONSTRAINTS := constraints.txt
PIP    := $(PY) -m pip install --quiet -c $(CONSTRAINTS)
STAMP  := $(VENV)/.installed
STAMP_TEST := $(VENV)/.installed-test
STAMP_BENCH := $(VENV)/.installed-bench

.PHONY: demo test test-cuda test-slow test-browser chromium bench setup clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml $(CONSTRAINTS) | $(PY)
	$(PIP) -e .
	touch $@

$(STAMP_TEST): pyproject.toml $(CONSTRAINTS) | $(PY)
	$(PIP) -e '.[test,onnx,shards,tensorboard]'
	touch $@ $(STAMP)

$(STAMP_BENCH): pyproject.toml $(CONSTRAINTS) | $(PY)
	$(PIP) -e '.[test,onnx,shards,tensorboard,bench]'
	touch $@ $(STAMP_TEST) $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/audioconv demo --out runs/demo

test: $(STAMP_TEST)
	$(PY) -m pytest -q

test-cuda: $(STAMP_TEST)
	$(PY) -m pytest -q -m cuda

test-slow: $(STAMP_TEST)
	$(PY) -m pytest -q -m slow

test-browser: $(STAMP_TEST) chromium
	$(PY) -m pytest -q -m browser

# Headless Chromium for the report test, from Debian's packages when it is missing (needs root).
chromium:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
		echo "make chromium: Chromium is missing and installing it needs root;" >&2; \
		echo "  run 'sudo apt-get update && sudo apt-get install -y chromium' (Debian/Ubuntu), then try again" >&2; \
		exit 1; \
	fi; \
	echo "installing Chromium from Debian's packages (apt-get)"; \
	apt-get update -q >/dev/null && \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null && \
	command -v chromium >/dev/null || { echo "make chromium: apt-get did not install a chromium command" >&2; exit 1; }

bench: $(STAMP_BENCH)
	$(PY) benchmarks/augment_bench.py
	$(PY) benchmarks/data_bench.py
	$(PY) benchmarks/train_bench.py
	$(PY) benchmarks/project_bench.py

clean:
	rm -rf $(VENV) runs build *.egg-info
