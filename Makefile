# cdclab — make is the front door. `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
CDCLAB := $(VENV)/bin/cdclab
# compose where a Docker engine and its Compose plugin answer, native elsewhere;
# LAB_BACKEND=compose|native overrides. `make up` never installs a Docker engine by itself.
LAB_BACKEND ?= $(shell docker info >/dev/null 2>&1 && docker compose version >/dev/null 2>&1 && echo compose || echo native)
export LAB_BACKEND
S ?= postgres
N ?= 100
PYTEST_ARGS ?=
# compose.yaml's checks (tests/unit/test_compose.py) need the Compose CLI; on a machine without it the
# test targets deselect them, and say so (tests/conftest.py), instead of letting them skip
NO_COMPOSE_CLI := $(shell docker compose version >/dev/null 2>&1 || echo 1)
TEST_ENV := $(if $(NO_COMPOSE_CLI),CDCLAB_NO_COMPOSE_CLI=1)

.PHONY: help engine images bootstrap up down status logs clean kill workload workload-pause workload-resume test test-tools test-all-dags test-unit harness-example lint format reload-airflow bench bench-quick lock

help: ## list every target
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "} {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

engine: ## (machines without an image registry) install Docker's engine + Compose, make the base image
	@bash infra/engine/engine.sh

images: ## (compose) build every image from infra/*/Dockerfile, with progress (make up does it too)
	@docker compose --env-file infra/versions.env --env-file infra/ports.env --env-file infra/credentials.env build

bootstrap: ## install what is missing (native: Debian packages, Maven jars, MinIO; both: uv + .venv) — cached
ifeq ($(LAB_BACKEND),native)
	@bash infra/native/bootstrap.sh
else
	@bash infra/native/bootstrap.sh --python-only
endif

up: bootstrap ## start the whole lab (idempotent; compose builds the images first) and print the status table
	@$(CDCLAB) lab up

down: ## stop the lab, keep its data
	@$(CDCLAB) lab down

status: ## a table of services, addresses and states (the same under both backends)
	@$(CDCLAB) lab status

logs: ## the last lines of one service's log: make logs S=kafka [N=200]
	@$(CDCLAB) lab logs $(S) -n $(N)

kill: ## SIGKILL one service, for fault drills: make kill S=connect (make up brings it back)
	@$(CDCLAB) lab kill $(S)

workload: ## the shop's workload: status, or set its rate and resume: make workload RATE=5 (operations/s)
ifdef RATE
	@$(PY) -m cdclab.lab.shop_workload set --rate $(RATE)
else
	@$(PY) -m cdclab.lab.shop_workload status
endif

workload-pause: ## stop changing the shop (the workload service keeps running)
	@$(PY) -m cdclab.lab.shop_workload pause

workload-resume: ## change the shop again, at the rate set last
	@$(PY) -m cdclab.lab.shop_workload resume

clean: bootstrap ## stop everything and wipe all lab data (databases, topics, buckets)
	@$(CDCLAB) lab clean

test: bootstrap test-tools ## run every test; starts the lab first if it is not healthy
	@$(if $(NO_COMPOSE_CLI),echo "cdclab: no Compose CLI here: the compose.yaml checks are deselected (make engine installs it)";) $(TEST_ENV) $(PY) -m pytest $(PYTEST_ARGS)

test-tools: ## what the browser test needs beyond the venv: Debian's chromium + chromium-driver (apt, if missing)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver; }

test-all-dags: bootstrap ## every DAG of dags/ triggered through the lab's scheduler as the UI does, all at once, twice
	@CDCLAB_ALL_DAGS=1 $(PY) -m pytest tests/integration/test_all_dags_scheduler.py $(PYTEST_ARGS)

test-unit: bootstrap ## only the tests that need no running service
	@$(if $(NO_COMPOSE_CLI),echo "cdclab: no Compose CLI here: the compose.yaml checks are deselected (make engine installs it)";) $(TEST_ENV) $(PY) -m pytest -m unit $(PYTEST_ARGS)

reload-airflow: bootstrap ## restart the lab's Airflow with this shell's CDCLAB_USER_DAGS / CDCLAB_USER_PYTHONPATH / CDCLAB_BUNDLED_DAGS
	@$(VENV)/bin/cdclab lab reload-airflow

harness-example: bootstrap ## run examples/harness (a user's repository) against the lab with the cdclab pytest plugin
	@$(PY) -m pytest examples/harness/tests -p no:cacheprovider $(PYTEST_ARGS)

lint: ## ruff, ruff format --check, mypy on src/, uv lock --check
	@$(VENV)/bin/ruff check src tests dags
	@$(VENV)/bin/ruff format --check src tests dags
	@$(VENV)/bin/mypy
	@uv lock --check

format: ## apply ruff's formatting and safe fixes
	@$(VENV)/bin/ruff format src tests dags
	@$(VENV)/bin/ruff check --fix src tests dags

bench: up ## measure throughput ratios against side-by-side baselines (1,000,000 CDC events); writes bench/results/
	@$(PY) -m bench --events 1000000 --runs 3

bench-quick: up ## the benchmarks at small sizes (a smoke check, under 5 minutes)
	@$(PY) -m bench --quick

lock: ## re-resolve uv.lock after changing pyproject.toml
	@uv lock
