# Fresh machine -> venv -> install -> job. `make demo` plays an episode on the embedded default,
# `make test` builds the documentation (warnings as errors) and runs the whole suite (what CI runs),
# `make docs` builds the documentation site into site/, `make bench` prints the speed figures.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test docs bench clean

install: $(VENV)/.installed

# torch pinned first: 2.13.0 is the CPU build on these machines; an unpinned torch pulls GBs of CUDA wheels.
# editable_mode=compat: setuptools' default editable finder hides hydra_plugins/ from hydra's plugin scan, and
# BenchMARL's own CLI (python -m benchmarl.run task=datagames/...) needs that plugin (hydra issue 2359)
$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[dev,rl,benchmarl,docs]" --config-settings editable_mode=compat
	$(BIN)/datagames warmup   # numba compiles the kernels once (1-2 min), not silently in the first run
	touch $@

demo: install
	$(BIN)/datagames eval --config default --seeds 5 --out results/default

docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# the documentation first (a broken link or page fails the run), the tests last (their summary closes the log)
test: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup --durations=15

bench: install
	$(BIN)/python benchmarks/bench_env.py

clean:
	rm -rf $(VENV) runs results site .pytest_cache
