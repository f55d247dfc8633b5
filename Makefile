# Set-up and the main jobs. Every target creates the virtual environment on first use.
# torch==2.13.0 is installed first so the CPU build on this machine's disk satisfies the
# requirements and no multi-GB CUDA build is pulled in.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench-closed-form clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/unsample demo --out out/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench-closed-form: $(STAMP)
	$(BIN)/python -m unsample.bench.closed_form

clean:
	rm -rf $(VENV) out
