# One command surface for people and CI. `make help` lists the targets.
# Every target installs uv (from PyPI) and syncs the locked dependencies when needed.

SHELL := /bin/bash
.DEFAULT_GOAL := help

UV ?= $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
RUN := $(UV) run --locked

.PHONY: help uv sync dev test lint format typecheck migrate openapi check clean bench

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

uv: ## Install uv when it is missing
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || \
		python3 -m pip install --quiet --user uv 2>/dev/null || \
		python3 -m pip install --quiet --user --break-system-packages uv

sync: uv ## Install the locked dependencies into .venv
	@$(UV) sync --locked --quiet

dev: sync ## Run the whole system locally (embedded PostgreSQL, Redis, SMTP sink, API, worker)
	$(RUN) saas dev

test: sync ## Run the test suite with coverage (real PostgreSQL and Redis, see README)
	$(RUN) pytest

lint: sync ## ruff check + ruff format --check
	$(RUN) ruff check .
	$(RUN) ruff format --check .

format: sync ## Apply ruff's fixes and formatting
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

typecheck: sync ## mypy --strict on src/
	$(RUN) mypy --strict src

migrate: sync ## Apply migrations to APP_DATABASE_URL
	$(RUN) saas migrate

openapi: sync ## Print the OpenAPI document
	@$(RUN) saas openapi

check: lint typecheck test ## Everything CI checks

clean: ## Remove caches and the dev data directory
	rm -rf .data .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* coverage.xml

bench: sync ## Benchmark the API against its floor (ARGS="--duration 5 --workers 1"; see bench/README.md)
	$(RUN) python -m bench.run $(ARGS)
