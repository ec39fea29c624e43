# nea's developer entry points. `make run` and `make test` are the README's quickstart:
# each creates .venv on first use and installs nea (with its C extension) and the test extras.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.nea-installed
PORT ?= 8080

.PHONY: setup run test lint typecheck pytest bench bench-instructions asan clean

$(STAMP): pyproject.toml setup.py $(wildcard csrc/*.c csrc/*.h)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[standard,test]'
	@# The extension is optional to pip (a failed build is a warning and leaves an older
	@# build in place): make setup insists on a fresh one.
	@for f in csrc/*.c csrc/*.h; do \
	    [ -n "$$(find src/nea -maxdepth 1 -name '_meter*.so' -newer $$f)" ] || { \
	        echo "the C extension nea._meter did not build (older than $$f): run" \
	             "'$(BIN)/python -m pip install -v -e .' to see the compiler's errors" >&2; \
	        exit 1; }; \
	done
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/nea --app-dir examples oom:app --port $(PORT) --budget 512KiB

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

# CPU instructions per request under callgrind (needs valgrind): the metering cost of
# budgets, deterministic enough for the few-percent targets that req/s cannot resolve here.
bench-instructions: setup
	$(BIN)/python bench/instructions.py

# The meter's C extension built with AddressSanitizer into build/asan (a copy of the
# package, so the normal build is untouched), then the meter tests (region on and off), the
# trip corpus (its servers inherit the ASan build) and longer randomized stress runs against
# it (two with the region, one with the table only). PYTHONMALLOC=malloc lets ASan see every
# Python block.
ASAN_DIR := build/asan
asan: setup
	rm -rf $(ASAN_DIR) && mkdir -p $(ASAN_DIR)
	cp -r src/nea $(ASAN_DIR)/nea && rm -f $(ASAN_DIR)/nea/*.so
	gcc -shared -fPIC -g -O1 -fno-omit-frame-pointer -fsanitize=address -Wall -Wextra -Werror \
	    -I"$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" \
	    csrc/meter.c csrc/blocks.c csrc/region.c csrc/slots.c csrc/module.c csrc/numpy.c csrc/clibs.c csrc/anyblocks.c csrc/trips.c \
	    -o $(ASAN_DIR)/nea/_meter$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
	env PYTHONPATH=$(ASAN_DIR) PYTHONMALLOC=malloc NEA_REQUIRE_NATIVE=1 \
	    ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 LD_PRELOAD="$$(gcc -print-file-name=libasan.so)" \
	    sh -c '$(BIN)/python -c "import nea._meter as m; assert \"build/asan\" in m.__file__, m.__file__" && \
	        $(BIN)/python -m pytest -q tests/meter tests/trips && \
	        $(BIN)/python -m tests.meter._stress 11 30 && $(BIN)/python -m tests.meter._stress 12 30 && \
	        NEA_REGION=off $(BIN)/python -m tests.meter._stress 13 30 && \
	        $(BIN)/python -m tests.meter._clib_stress 14 10'

clean:
	rm -rf build $(VENV) src/nea/*.so src/*.egg-info
