# The two commands of the README: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check bench chaos clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/warden demo

test: $(STAMP) check
	$(BIN)/python -m pytest -q

check: $(STAMP)
	$(BIN)/ruff check supervisor actors bus config tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/concurrent_runs.py --runs 1 100 1000

chaos: $(STAMP)
	$(BIN)/python bench/chaos.py --kills 200

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache
