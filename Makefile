# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates the local virtualenv .venv on first use and installs jsgp into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo demo-train test test-slow bench clean

$(STAMP): setup.cfg setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# The shipped pretrained policies against classical methods; trains nothing (a few minutes).
demo: $(STAMP)
	$(PY) -m experiments.demo

# The paper's protocol end to end on the Fourier task: trains its networks first (~10 min).
demo-train: $(STAMP)
	$(PY) -m experiments.fourier --flagfile=experiments/configs/fourier_demo.flags

# Two pytest workers (pytest-xdist), one test module each at a time: module fixtures are built
# once, and one worker compiles while the other runs (XLA compiles on one thread).
TEST_WORKERS ?= 2

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) -m experiments.bench --quick

clean:
	rm -rf $(VENV) build *.egg-info
