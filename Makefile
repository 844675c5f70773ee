# The two commands a newcomer runs (see README):
#   make demo   set up .venv and run the lifecycle demo (worker processes on db+sqlite://)
#   make test   set up .venv, lint, type-check and run every test
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
STAMP = $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench clean

EXAMPLE = examples/file_backend

$(STAMP): pyproject.toml plugins/memory_backend/pyproject.toml plugins/redis_backend/pyproject.toml \
		plugins/db_backend/pyproject.toml \
		$(EXAMPLE)/pyproject.toml \
		$(wildcard $(EXAMPLE)/resultstore_file/*.py)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --group dev -e '.[memory,cli]' -e plugins/memory_backend \
		-e plugins/redis_backend -e 'plugins/db_backend[postgresql,mysql]'
	# The example third-party plugin is installed the way a user installs one: not editable.
	$(BIN)/python -m pip install --quiet ./$(EXAMPLE)
	touch $@

demo: $(STAMP)
	$(BIN)/python -m resultstore.demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python bench/run.py --write

clean:
	rm -rf $(VENV)
