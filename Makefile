# Two commands: `make run` (the service with demo traffic) and `make test` (everything CI runs).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: run serve test test-one lint unit deps clean shim

# Refuse an interpreter outside the supported range at once (pip would only say so after a
# resolver run, or churn through old releases of the dependencies).
PYTHON_OK := import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 11) <= v <= (3, 13) else \
  f"lwsobs needs CPython 3.11 to 3.13; $(PYTHON) is {sys.version.split()[0]}: run make PYTHON=python3.12 (or another in range)")

# The compiled build (mypyc, setup.py) is rebuilt whenever a Python source changes.
$(STAMP): pyproject.toml setup.py $(wildcard lwsobs/*.py lwsobs/*/*.py lwsobs/*/*/*.py)
	@$(PYTHON) -c '$(PYTHON_OK)'
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
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

# The whole suite on CPython 3.11, 3.12 and 3.13, compiled and interpreted (scripts/test-matrix).
test: deps $(STAMP) lint
	scripts/test-matrix

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

# The suite once, on .venv's interpreter and build: the quick loop while developing.
test-one: deps $(STAMP)
	$(BIN)/pytest -q

shim:
	$(MAKE) -C shim

clean:
	rm -rf $(VENV) .venvs build .pytest_cache .mypy_cache .ruff_cache
	find lwsobs -name '*.so' -delete; rm -f ./*__mypyc*.so

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

# Instructions per request under callgrind (noise-free; bench/instructions.py; --breakdown needs
# the interpreted build, LWSOBS_BUILD=interpreted).
.PHONY: bench-instructions
bench-instructions: deps $(BENCH_STAMP)
	$(BIN)/python bench/instructions.py

# The shim's own cost per forwarded callback against the same lws app without it (bench/shim.py).
.PHONY: bench-shim
bench-shim: deps $(STAMP)
	$(BIN)/python bench/shim.py

.PHONY: bench-ingest
bench-ingest: $(BENCH_STAMP)
	$(BIN)/python bench/ingest.py
