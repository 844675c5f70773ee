# The two commands a newcomer runs (see README):
#   make demo   set up .venv and run the lifecycle demo (worker processes on db+sqlite://)
#   make test   set up .venv, lint, type-check and run every test
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
STAMP = $(VENV)/.installed

.PHONY: demo test lint typecheck pytest chromium screenshot bench celery-upstream \
	celery-upstream-smoke clean

EXAMPLE = examples/file_backend

$(STAMP): pyproject.toml plugins/memory_backend/pyproject.toml plugins/redis_backend/pyproject.toml \
		plugins/db_backend/pyproject.toml \
		integrations/taskiq/pyproject.toml integrations/dramatiq/pyproject.toml \
		integrations/celery/pyproject.toml dashboard/pyproject.toml $(EXAMPLE)/pyproject.toml \
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
	# The dashboard brings its web stack (Starlette, Jinja2, uvicorn); its test extra the
	# browser tests' driver, Playwright, which drives Debian's chromium (target below):
	# never `playwright install`, which downloads a browser of its own.
	$(BIN)/python -m pip install --quiet -e 'dashboard[test]'
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

pytest: $(STAMP) chromium
	$(BIN)/python -m pytest

# The dashboard's browser tests run Debian's chromium. Installed here when missing and we
# may (root); otherwise those tests skip, except under CI, where they fail.
chromium:
	@command -v chromium >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
		else \
			echo "chromium is missing and this is not root: the browser tests will skip" \
				"(CI=true: fail); install it with: sudo apt-get install -y chromium"; \
		fi; }

# The screenshot in the READMEs (docs/dashboard.png), made by the browser test.
screenshot: $(STAMP) chromium
	RESULTSTORE_SCREENSHOT=1 $(BIN)/python -m pytest tests/dashboard/test_browser.py -k overview

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
