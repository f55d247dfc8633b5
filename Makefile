# Set-up and the main jobs. Every target creates the virtual environment on first use.
# torch==2.13.0 is installed first so the CPU build on this machine's disk satisfies the
# requirements and no multi-GB CUDA build is pulled in.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast bench-closed-form bench-quick bench-full clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The browser tests (tests/test_ui_browser.py) drive Debian's Chromium: playwright cannot download
# its own browser here. Installed when missing (CI runs as root); elsewhere a note says how.
CHROMIUM := /usr/bin/chromium

$(CHROMIUM):
	@if ! command -v apt-get >/dev/null 2>&1; then \
	    echo "note: no apt-get; install Chromium as $(CHROMIUM) for the browser tests (they skip without it)"; \
	elif [ "$$(id -u)" -ne 0 ]; then \
	    echo "note: run 'sudo apt-get install -y chromium' for the browser tests (they skip without it)"; \
	else \
	    apt-get update && apt-get install -y chromium; \
	fi

setup: $(STAMP) | $(CHROMIUM)

demo: $(STAMP)
	$(BIN)/unsample demo --out out/demo

test: setup
	$(BIN)/python -m pytest -q

# The quick loop: every test but the four tiers marked in pyproject.toml (processes started, the
# browser, training runs, the real embedded models); `make test` (CI's command) runs them all.
# Two pytest-xdist workers, one torch thread each, a test file per worker at a time (--dist loadfile:
# each worker builds only the fixtures of its files; measured 75 s against 123 s with tests dealt
# one by one). The tests' models are tiny, and two threads per process oversubscribe 2 cores.
FAST := not subprocess and not browser and not training and not model
test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m "$(FAST)" -n 2 --dist loadfile

bench-closed-form: $(STAMP)
	$(BIN)/python -m unsample_lab.bench.closed_form

# Benchmarks on the embedded model (docs/benchmarks.md). Each "full" bench runs as single-threaded
# processes, two at a time (one per core); docs/benchmarks.md lists every run behind its tables.
E := OMP_NUM_THREADS=1 $(BIN)/unsample bench edit --pairs 50 --steps 50 --controls swap --inversion-guidance 1
bench-quick: $(STAMP)
	$(BIN)/unsample bench reconstruction --quick --out out/rec-quick
	$(BIN)/unsample bench edit --quick --out out/edit-quick

bench-full: $(STAMP)
	$(E) --methods ddim --masks none,noise,attention,intersect,exact --out out/edit-ddim & \
	$(E) --methods edict --masks none,noise,exact --out out/edit-edict & wait
	$(E) --methods ddim --masks noise --mask-rule otsu --mask-smooth 1 --out out/edit-ddim-otsu & \
	$(E) --methods edict --masks noise --mask-rule otsu --mask-smooth 1 --out out/edit-edict-otsu & wait
	$(E) --methods edict --masks noise --mask-rule otsu --mask-smooth 1 --steps 36 --out out/edit-default & \
	OMP_NUM_THREADS=1 $(BIN)/unsample bench edit --pairs 50 --steps 50 --controls swap --methods ddim --masks none \
	    --out out/edit-ddim-swap & wait
	$(E) --methods ddim --masks none,noise --mask-rule otsu --mask-smooth 1 --robustness --pairs 20 --out out/edit-rob-ddim & \
	$(E) --methods edict --masks none,noise --mask-rule otsu --mask-smooth 1 --robustness --pairs 20 --out out/edit-rob-edict & wait
	OMP_NUM_THREADS=1 $(BIN)/unsample bench reconstruction --scenes 10 --steps 50 --guidance 1,7 --out out/rec-50 & \
	OMP_NUM_THREADS=1 $(BIN)/unsample bench reconstruction --scenes 5 --steps 100,200 --guidance 1,7 \
	    --methods ddim,edict --option edict:p=0.93 --out out/rec-long & wait
	cat out/rec-50/report.md out/rec-long/report.md

clean:
	rm -rf $(VENV) out
