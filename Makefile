# The README's commands. Each target builds .venv from this project's own files first.
PYTHON    ?= python3
VENV      := .venv
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.installed-stamp
EXTRAS    ?= cpu,optimize,dev
# The installed layout (aiscan.model, aiscan.jobs, ...) as links, so mypy sees the import names users see.
TYPECHECK := build/typecheck
PACKAGES  := model jobs worker training migrations

.PHONY: setup demo test lint typecheck bench faults clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/aiscan demo

test: lint typecheck
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)/aiscan
	for p in $(PACKAGES); do ln -s ../../../$$p $(TYPECHECK)/aiscan/$$p; done
	$(BIN)/mypy

bench: setup
	$(BIN)/python -m bench.run

# The slow fault matrix (minutes): private Redis and PostgreSQL on free ports, real workers and beat.
faults: setup
	$(BIN)/python -m bench.faults

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache
