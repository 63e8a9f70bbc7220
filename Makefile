# Two commands for a newcomer: `make demo` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
SCATTER_STAMP := $(VENV)/.scatter
# The exact versions CI tests; setup.cfg only states ranges.
CONSTRAINTS := constraints.txt
PYTEST_ARGS ?=

.PHONY: install demo test bench clean

install: $(STAMP) $(SCATTER_STAMP)

# The package, the ONNX and test tools: all wheels, no compiler.
$(STAMP): setup.cfg pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[dev]"
	touch $(STAMP)

# torch-scatter (extra `scatter`), the project's aggregation kernel for the sparse graph path. It has no wheel
# for this torch: pip compiles it against the installed torch (a C++ compiler, a few minutes), once. Without it
# the package sums with PyG's scatter (same results, tests/test_graph_scatter.py), so a failed build only warns.
$(SCATTER_STAMP): $(STAMP)
	$(PY) -c "import torch_scatter" 2>/dev/null || $(PIP) install -q -c $(CONSTRAINTS) --no-build-isolation torch-scatter \
	  || echo "WARNING: torch-scatter did not build; dspose uses PyG's scatter instead (same results). To retry: rm $(SCATTER_STAMP) && make install" >&2
	touch $(SCATTER_STAMP)

# The demo needs no torch-scatter (its models use the dense graph path): it starts without waiting for the build.
demo: $(STAMP)
	$(VENV)/bin/dspose demo --out runs/demo

test: $(STAMP) $(SCATTER_STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(VENV)/bin/dspose bench all

clean:
	rm -rf runs build dist *.egg-info
