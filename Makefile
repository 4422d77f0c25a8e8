# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
STAMP_TEST := $(VENV)/.installed-test

.PHONY: demo test test-cuda test-slow test-browser bench setup clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

$(STAMP_TEST): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@ $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/audioconv demo --out runs/demo

test: $(STAMP_TEST)
	$(PY) -m pytest -q

test-cuda: $(STAMP_TEST)
	$(PY) -m pytest -q -m cuda

test-slow: $(STAMP_TEST)
	$(PY) -m pytest -q -m slow

test-browser: $(STAMP_TEST)
	@command -v chromium >/dev/null || (echo "installing Debian chromium"; apt-get update -q >/dev/null; apt-get install -y -q chromium >/dev/null)
	$(PY) -m pytest -q -m browser

bench: $(STAMP_TEST)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/augment_bench.py
	$(PY) benchmarks/data_bench.py
	$(PY) benchmarks/train_bench.py
	$(PY) benchmarks/project_bench.py

clean:
	rm -rf $(VENV) runs build *.egg-info
