# flask-api: `make run` serves the API on port 8888, `make test` runs the checks. Both need only python3.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8888
# Loopback by default: `make run BIND=0.0.0.0:8888` to listen on every interface.
BIND ?= 127.0.0.1:$(PORT)
PIP_COMPILE := $(BIN)/pip-compile --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
	--no-emit-find-links --no-header --quiet

# Stamp files: a virtualenv is reinstalled when its requirements change.
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev

.DEFAULT_GOAL := help
.PHONY: help run test lint fmt requirements clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(RUNTIME_STAMP): requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.txt
	touch $@

$(DEV_STAMP): requirements.txt requirements-dev.txt $(RUNTIME_STAMP)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.txt
	touch $@

run: $(RUNTIME_STAMP) ## Serve the API with gunicorn (4 workers, JSON store) on 127.0.0.1:8888
	PORT=$(PORT) $(BIN)/gunicorn -c gunicorn.conf.py -w 4 -b $(BIND) src:application

test: lint ## Lint, then run the whole test suite with branch coverage (>= 90%)
	$(BIN)/python -m pytest --cov --cov-report=term-missing tests

lint: $(DEV_STAMP) ## ruff check and ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: $(DEV_STAMP) ## Fix what ruff can fix and format the code
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

requirements: $(DEV_STAMP) ## Recompile requirements*.txt (pinned, with hashes) from requirements*.in
	$(PIP_COMPILE) --output-file=requirements.txt requirements.in
	$(PIP_COMPILE) --output-file=requirements-dev.txt requirements-dev.in

clean: ## Remove the virtualenv and caches (keeps data.json and its key)
	rm -rf $(VENV) .pytest_cache .ruff_cache htmlcov .coverage .coverage.* coverage.xml
	find . -path './.venv*' -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
