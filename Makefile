# Set-up and the main jobs. Every target creates the virtual environment on first use.
# torch==2.13.0 is installed first so the CPU build on this machine's disk satisfies the
# requirements and no multi-GB CUDA build is pulled in.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench-closed-form bench-quick bench-full clean

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

# Benchmarks on the embedded model (docs/benchmarks.md). Each "full" bench runs as two
# single-threaded processes, one per core; the two edit runs are merged into one table.
bench-quick: $(STAMP)
	$(BIN)/unsample bench reconstruction --quick --out out/rec-quick
	$(BIN)/unsample bench edit --quick --out out/edit-quick

bench-full: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/unsample bench edit --pairs 50 --methods ddim,edict --out out/edit-a & \
	OMP_NUM_THREADS=1 $(BIN)/unsample bench edit --pairs 50 --methods null-text --out out/edit-b & wait
	$(BIN)/python -m unsample.bench.merge out/edit-a out/edit-b
	OMP_NUM_THREADS=1 $(BIN)/unsample bench reconstruction --scenes 10 --steps 50 --guidance 1,7 --out out/rec-50 & \
	OMP_NUM_THREADS=1 $(BIN)/unsample bench reconstruction --scenes 5 --steps 100,200 --guidance 1,7 \
	    --methods ddim,edict --out out/rec-long & wait
	cat out/rec-50/report.md out/rec-long/report.md

clean:
	rm -rf $(VENV) out
