# Every target documents itself: `make help` lists them.
.DEFAULT_GOAL := help
DEV := python3 scripts/dev.py

.PHONY: help setup test test-unit test-integration lint format demo up down status docs ci clean

help: ## List the targets with what they do
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

setup: ## Create .venv with exactly the locked dependencies
	$(DEV) setup

test: ## Run every test (unit and integration, real processes)
	$(DEV) test

test-unit: ## Run the fast tests only (no processes started)
	$(DEV) test tests/unit

test-integration: ## Run the tests that start real processes
	$(DEV) test tests/integration

lint: ## ruff check, ruff format --check, mypy and the import contracts (lint-imports)
	$(DEV) lint

format: setup ## Format and autofix with ruff
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

demo: ## Run the demo of the loop (README's main job)
	$(DEV) demo

up: setup ## Start the local stack in the background (driftloop up -d)
	.venv/bin/driftloop up --detach

down: ## Stop the local stack
	.venv/bin/driftloop down

status: ## Health of the local stack's components
	.venv/bin/driftloop status

docs: setup ## Regenerate README's settings table and the Grafana dashboards
	.venv/bin/python -m driftloop.docs
	.venv/bin/python -m driftloop.dashboards

ci: ## Run what CI runs (.ci/run)
	bash .ci/run

clean: ## Remove local state (.driftloop/) and caches, keep .venv
	rm -rf .driftloop .pytest_cache .mypy_cache .ruff_cache
