# Two commands: `make run` (the service with demo traffic) and `make test` (everything CI runs).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: run serve test lint unit deps clean shim

$(STAMP): pyproject.toml setup.py $(wildcard lwsobs/*/_fast*.c)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/lwsobs serve --demo --host $(HOST) --port $(PORT)

serve: $(STAMP)
	$(BIN)/lwsobs serve --host $(HOST) --port $(PORT)

deps:
	scripts/system-deps

lint: $(STAMP)
	$(BIN)/ruff check lwsobs tests bench deploy scripts/record-lws-demo
	$(BIN)/ruff format --check lwsobs tests bench deploy scripts/record-lws-demo
	$(BIN)/mypy

test: deps $(STAMP) lint
	$(BIN)/pytest -q

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

shim:
	$(MAKE) -C shim

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Core benchmarks (memory per wsi, /metrics render, idle ticks); prints numbers, asserts nothing.
.PHONY: bench-core
bench-core: $(STAMP)
	$(BIN)/python bench/core.py

# HTTP benchmarks: lwsobs vs plain aiohttp and its peers under wrk and h2load (bench/README.md).
BENCH_STAMP := $(VENV)/.installed-bench
.PHONY: bench bench-quick

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $(BENCH_STAMP)

bench: deps $(BENCH_STAMP)
	$(BIN)/python bench/run.py --full

bench-quick: deps $(BENCH_STAMP)
	$(BIN)/python bench/run.py --quick

# Instructions per request under callgrind (noise-free; bench/instructions.py), with a breakdown.
.PHONY: bench-instructions
bench-instructions: deps $(BENCH_STAMP)
	$(BIN)/python bench/instructions.py --breakdown

# The shim's own cost per forwarded callback against the same lws app without it (bench/shim.py).
.PHONY: bench-shim
bench-shim: deps $(STAMP)
	$(BIN)/python bench/shim.py

.PHONY: bench-ingest
bench-ingest: $(BENCH_STAMP)
	$(BIN)/python bench/ingest.py
