# Two entry points that work on a fresh machine (Python 3.10+ with venv):
#   make demo   set up, then run the whole workflow on the embedded demo data
#   make test   set up, then run the test suite
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 8

.PHONY: setup demo test lint bench clean constraints
setup: $(VENV)/.installed

# The exact versions of constraints.txt (what the tests ran with), inside pyproject.toml's ranges.
$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

# Re-pin constraints.txt and envs/workflow.yaml to what the virtualenv holds now (after a change
# to pyproject.toml's dependencies or a deliberate `$(BIN)/pip install -U NAME`).
constraints:
	$(BIN)/python scripts/freeze_constraints.py

demo: setup
	PATH="$(abspath $(BIN)):$$PATH" snakemake --cores $(CORES) --resources gpu=1

test: setup lint
	PATH="$(abspath $(BIN)):$$PATH" pytest

# Formatting and lint, as the Snakemake workflow template checks them (config in pyproject.toml).
lint: setup
	$(BIN)/snakefmt --check Snakefile rules/
	$(BIN)/ruff check src scripts tests bench

bench: setup
	$(BIN)/python bench/bench_cache.py
	$(BIN)/python bench/bench_loader.py

clean:
	rm -rf results .snakemake
