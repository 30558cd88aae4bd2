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

.PHONY: demo test test-latest check lock bench bench-quick chaos clean bubblewrap chromium

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

# apt_install(command, package, what is lost without it): installs a Debian package where
# the command is missing and apt-get and root (or password-less sudo) allow it. Elsewhere, or
# if it fails, one line says so and things go on; the tests that need it skip, saying what
# they did not check.
define apt_install
	@command -v $(1) >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; \
	  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	  else SUDO=none; fi; \
	  if [ "$$SUDO" != none ] && command -v apt-get >/dev/null 2>&1; then \
	    { $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) \
	      || { $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive \
	           apt-get install -y -qq $(2); }; } >/dev/null 2>&1 \
	    || echo "make: apt-get could not install $(2); $(3)"; \
	  else echo "make: $(1) is missing and cannot be installed here; $(3)"; fi; }
endef

# bubblewrap isolates the code sandbox (actors/isolation.py); without it the sandbox degrades
# with a warning.
bubblewrap:
	$(call apt_install,bwrap,bubblewrap,the sandbox runs less isolated)

# Debian's chromium runs the dashboard's browser test (tests/integration/test_dashboard_browser.py).
chromium:
	$(call apt_install,chromium,chromium,the dashboard's browser test will skip)

demo: $(STAMP) bubblewrap
	$(BIN)/warden demo

test: $(STAMP) check bubblewrap chromium
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
# protobuf (of the OTLP exporter) is held where autogen-core, a bench peer, accepts it, so the
# bench lock can keep the test lock's versions.
lock: $(BIN)/python
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	printf 'setuptools>=77\nprotobuf>=5.29.3,<5.30\n' | UV_PYTHON_DOWNLOADS=never $(BIN)/uv pip compile --quiet \
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
