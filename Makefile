# cdclab — make is the front door. `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
CDCLAB := $(VENV)/bin/cdclab
# compose where a Docker engine answers, native elsewhere; LAB_BACKEND=compose|native overrides.
LAB_BACKEND ?= $(shell docker info >/dev/null 2>&1 && echo compose || echo native)
COMPOSE := docker compose --env-file infra/versions.env --env-file infra/ports.env --env-file infra/credentials.env
S ?= postgres
PYTEST_ARGS ?=

.PHONY: help bootstrap up down status logs clean test test-unit lint format bench lock

help: ## list every target
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "} {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

bootstrap: ## install what is missing (Debian packages, uv + .venv, Maven jars, MinIO) — cached
ifeq ($(LAB_BACKEND),native)
	@bash infra/native/bootstrap.sh
else
	@command -v uv >/dev/null || python3 -m pip install -q uv
	@uv sync --frozen --extra dev -q
endif

up: bootstrap ## start the whole lab (idempotent) and print the status table
ifeq ($(LAB_BACKEND),native)
	@$(CDCLAB) lab up
else
	@$(COMPOSE) up -d --wait && $(COMPOSE) ps
endif

down: ## stop the lab, keep its data
ifeq ($(LAB_BACKEND),native)
	@$(CDCLAB) lab down
else
	@$(COMPOSE) down
endif

status: ## a table of services, addresses and states
ifeq ($(LAB_BACKEND),native)
	@$(CDCLAB) lab status
else
	@$(COMPOSE) ps
endif

logs: ## the last lines of one service's log: make logs S=kafka
ifeq ($(LAB_BACKEND),native)
	@$(CDCLAB) lab logs $(S)
else
	@$(COMPOSE) logs --tail 100 $(S)
endif

clean: ## stop everything and wipe all lab data (databases, topics, buckets)
ifeq ($(LAB_BACKEND),native)
	@$(CDCLAB) lab clean
else
	@$(COMPOSE) down -v
endif

test: bootstrap ## run every test; starts the lab first if it is not healthy
	@LAB_BACKEND=$(LAB_BACKEND) $(PY) -m pytest $(PYTEST_ARGS)

test-unit: bootstrap ## only the tests that need no running service
	@$(PY) -m pytest -m unit $(PYTEST_ARGS)

lint: ## ruff, ruff format --check, mypy on src/, uv lock --check
	@$(VENV)/bin/ruff check src tests dags
	@$(VENV)/bin/ruff format --check src tests dags
	@$(VENV)/bin/mypy
	@uv lock --check

format: ## apply ruff's formatting and safe fixes
	@$(VENV)/bin/ruff format src tests dags
	@$(VENV)/bin/ruff check --fix src tests dags

bench: up ## measure throughput ratios against side-by-side baselines; writes bench/results/
	@$(PY) -m bench

lock: ## re-resolve uv.lock after changing pyproject.toml
	@uv lock
