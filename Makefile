# nea's developer entry points. `make run` and `make test` are the README's quickstart:
# each creates .venv on first use and installs nea (with its C extension) and the test extras.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.nea-installed
PORT ?= 8080

.PHONY: setup run test lint typecheck pytest bench asan clean

$(STAMP): pyproject.toml setup.py $(wildcard csrc/*.c csrc/*.h)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/nea --app-dir examples hello:app --port $(PORT)

lint: setup
	$(BIN)/ruff check src tests examples bench
	$(BIN)/ruff format --check src tests examples bench

typecheck: setup
	$(BIN)/mypy

pytest: setup
	NEA_REQUIRE_NATIVE=1 $(BIN)/python -m pytest

test: lint typecheck pytest

bench: setup
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/throughput.py

clean:
	rm -rf build $(VENV) src/nea/*.so src/*.egg-info
