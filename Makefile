# The two commands a newcomer runs (see README):
#   make demo   set up .venv and run the lifecycle demo (worker processes on db+sqlite://)
#   make test   set up .venv, lint, type-check and run every test
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
STAMP = $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench celery-upstream celery-upstream-smoke clean

EXAMPLE = examples/file_backend

$(STAMP): pyproject.toml plugins/memory_backend/pyproject.toml plugins/redis_backend/pyproject.toml \
		plugins/db_backend/pyproject.toml \
		integrations/taskiq/pyproject.toml integrations/dramatiq/pyproject.toml \
		integrations/celery/pyproject.toml $(EXAMPLE)/pyproject.toml \
		$(wildcard $(EXAMPLE)/resultstore_file/*.py)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --group dev -e '.[memory,cli]' -e plugins/memory_backend \
		-e plugins/redis_backend -e 'plugins/db_backend[postgresql,mysql]'
	# The taskiq and dramatiq bridges bring their task systems (their pyproject's
	# dependencies); the tests' real workers also need those systems' brokers.
	$(BIN)/python -m pip install --quiet -e 'integrations/taskiq[test]' \
		-e 'integrations/dramatiq[test]'
	# The Celery bridge; its test extra brings Celery (with Redis for the broker) and what
	# Celery's own integration suite imports.
	$(BIN)/python -m pip install --quiet -e 'integrations/celery[test]'
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

test: lint typecheck pytest celery-upstream-smoke

# Celery's own t/integration suite (celery 5.7.0's sdist): a few of its tests through the
# bridge in `make test`, the full files per backend here (about 20 minutes a backend).
celery-upstream-smoke: $(STAMP)
	$(BIN)/python integrations/celery/upstream/run.py --slice smoke --backends resultstore-redis

celery-upstream: $(STAMP)
	$(BIN)/python integrations/celery/upstream/run.py

bench: $(STAMP)
	$(BIN)/python bench/run.py --write

clean:
	rm -rf $(VENV)
