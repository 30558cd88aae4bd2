# The two commands of the README: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: demo test check bench bench-quick chaos clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

# The benchmark's peers and tools (langgraph, autogen-core, matplotlib, ...): the bench extra.
$(BENCH_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	@touch $(BENCH_STAMP)

demo: $(STAMP)
	$(BIN)/warden demo

test: $(STAMP) check
	$(BIN)/python -m pytest -q

check: $(STAMP)
	$(BIN)/ruff check supervisor actors bus config tests bench
	$(BIN)/mypy

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
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache
