# The three doors: `make run`, `make test`, `make lint`. Each installs what is missing first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export UV_CACHE_DIR ?= $(HOME)/.cache/uv
# PyTorch's CPU build: from a directory of wheels where the machine has one (uv, and the module environments
# the platform builds with it, look there first), else from PyTorch's CPU index.
WHEELHOUSE ?= /opt/wheels
TORCH ?= torch==2.13.0
ifneq ($(wildcard $(WHEELHOUSE)/torch-*.whl),)
export UV_FIND_LINKS ?= $(WHEELHOUSE)
TORCH_SOURCE := --find-links $(WHEELHOUSE)
else
TORCH_SOURCE := --index-url https://download.pytorch.org/whl/cpu
endif

.PHONY: install bytecode run test lint bench clean messages

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet --disable-pip-version-check "uv>=0.4,<1"
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python $(TORCH_SOURCE) "$(TORCH)"
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e ".[dev,gallery,llm]"
	touch $(STAMP)

# Bytecode for the project's own modules, read by every process even where PYTHONDONTWRITEBYTECODE is set
# (each server and command the suite starts would otherwise compile them again). Module templates stay as
# they are: `modelport init` copies them.
bytecode:
	$(BIN)/python -m compileall -q -x '/templates/' modelport

# `make run PORT=8001` serves on another port.
PORT ?= 8000

run: install bytecode
	$(BIN)/modelport server --demo --port $(PORT)

# The console's Russian catalog, updated with every message of its sources (then translate the new ones).
messages: install
	$(BIN)/pybabel extract --no-wrap -F modelport/console/babel.cfg -o build/console.pot .
	$(BIN)/pybabel update --no-wrap --no-fuzzy-matching -i build/console.pot -d modelport/console/locale -l ru

# Test files run in parallel, each whole on one worker (module-scoped servers stay shared within a file).
TEST_WORKERS ?= 2

test: install bytecode tests/oidc/node_modules/.package-lock.json
	bash scripts/install-system-deps.sh
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

# The OpenID Connect provider the tests start (tests/oidc_provider.py).
tests/oidc/node_modules/.package-lock.json: tests/oidc/package-lock.json
	bash scripts/install-system-deps.sh
	npm ci --prefix tests/oidc --no-audit --no-fund
	touch $@

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check modelport tests
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: install
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
