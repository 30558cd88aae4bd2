# The two commands of the README: `make demo` and `make test`. Each creates .venv when missing
# and installs exactly the locked versions (requirements.lock, hashes checked; `make lock`
# refreshes it). tests/test_locked_install.py checks that what is installed is what is locked.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
LOCK := requirements.lock
BENCH_LOCK := requirements-bench.lock
# The locking tool, used by `make lock` only (installs never need it).
UV_VERSION := 0.13.9
LATEST := .venv-latest

.PHONY: demo test test-latest check lock bench bench-quick chaos clean bubblewrap

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# --no-deps: the lock is the whole closure; a package it lacks fails the import, never
# pulls an unlocked version. The project itself goes in last, built by the locked setuptools.
$(STAMP): $(BIN)/python $(LOCK) pyproject.toml
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# The benchmark's peers and tools (langgraph, autogen-core, matplotlib, ...): the bench extra,
# locked with the test lock as its constraint, so it changes no version the tests ran on.
$(BENCH_STAMP): $(STAMP) $(BENCH_LOCK)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(BENCH_LOCK)
	@touch $(BENCH_STAMP)

# bubblewrap isolates the code sandbox (actors/isolation.py): installed here where apt-get
# and root (or password-less sudo) allow it. Elsewhere, or if it fails, one line says so and
# things go on: the sandbox degrades with a warning and the tests that need it skip, saying
# what they did not check.
bubblewrap:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; \
	  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	  else SUDO=none; fi; \
	  if [ "$$SUDO" != none ] && command -v apt-get >/dev/null 2>&1; then \
	    { $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap \
	      || { $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive \
	           apt-get install -y -qq bubblewrap; }; } >/dev/null 2>&1 \
	    || echo "make: apt-get could not install bubblewrap; the sandbox runs less isolated"; \
	  else echo "make: bubblewrap (bwrap) is missing and cannot be installed here; the sandbox runs less isolated"; fi; }

demo: $(STAMP) bubblewrap
	$(BIN)/warden demo

test: $(STAMP) check bubblewrap
	$(BIN)/python -m pytest -q

check: $(STAMP)
	$(BIN)/ruff check supervisor actors bus config src tests bench
	$(BIN)/python tests/typecheck.py

# Not part of `make test` or CI: the suite on the newest releases of every dependency, in a
# venv of its own, so that drift shows here before a `make lock` brings it to anyone.
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager setuptools -e '.[test]'
	WARDEN_UNLOCKED=1 $(LATEST)/bin/python -m pytest -q

# Refresh both locks from pyproject.toml (newest versions that satisfy it, every platform).
lock: $(BIN)/python
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	printf 'setuptools>=77\n' | UV_PYTHON_DOWNLOADS=never $(BIN)/uv pip compile --quiet \
		pyproject.toml - --extra test --generate-hashes --universal --python-version 3.11 \
		-o $(LOCK)
	UV_PYTHON_DOWNLOADS=never $(BIN)/uv pip compile --quiet pyproject.toml --extra test \
		--extra bench -c $(LOCK) --generate-hashes --universal --python-version 3.11 \
		-o $(BENCH_LOCK)

# The full matrix (every runtime, N = 1..10000, L = 0 and 50 ms, 3 reps), then recovery and
# memory: 58 min on 2 cores (BENCH_ARGS="--large-reps 1": 37 min).
# Writes bench/results/<date>.{json,md,png} and the README section.
bench: $(BENCH_STAMP)
	@echo "make bench: the full matrix takes about an hour (progress below); make bench-quick takes minutes"
	$(BIN)/python -m bench.matrix $(BENCH_ARGS)

bench-quick: $(BENCH_STAMP)
	$(BIN)/python -m bench.matrix --sizes 1 100 1000 --reps 1 --skip-memory \
		--out-dir bench/results/quick --no-readme

chaos: $(STAMP)
	$(BIN)/python bench/chaos.py --kills 200

clean:
	rm -rf $(VENV) $(LATEST) build *.egg-info src/*.egg-info .mypy_cache .ruff_cache
