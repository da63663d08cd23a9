# Fresh machine -> venv -> install -> job. `make demo` plays an episode on the embedded default,
# `make test` runs the whole suite (what CI runs), `make bench` prints the speed figures.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test bench clean

install: $(VENV)/.installed

# torch pinned first: 2.13.0 is the CPU build on these machines; an unpinned torch pulls GBs of CUDA wheels
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[dev,rl,benchmarl]"
	$(BIN)/datagames warmup   # numba compiles the kernels once (1-2 min), not silently in the first run
	touch $@

demo: install
	$(BIN)/datagames eval --config default --seeds 5 --out results/default

test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup --durations=15

bench: install
	$(BIN)/python benchmarks/bench_env.py

clean:
	rm -rf $(VENV) runs results .pytest_cache
