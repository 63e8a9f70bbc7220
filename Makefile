# Two commands for a newcomer: `make demo` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install demo test bench clean

install: $(STAMP)

# torch-scatter has no wheel for this torch: it is built from source against the installed torch
# (--no-build-isolation), once; pip's wheel cache makes later installs fast.
$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools
	$(PIP) install -q "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -c "import torch_scatter" 2>/dev/null || $(PIP) install -q --no-build-isolation torch-scatter
	$(PIP) install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dspose demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(VENV)/bin/dspose bench all

clean:
	rm -rf runs build dist *.egg-info
