# stackshift — every target creates the virtualenv and installs what it needs.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export STACKSHIFT_TEST_REDIS_URL ?= redis://127.0.0.1:6379/0

.DEFAULT_GOAL := help
.PHONY: help venv redis chromium demo test test-faults lint format bench

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -U "pip>=25.1"
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[memory]" --group dev
	touch $(STAMP)

venv: $(STAMP) ## create .venv and install stackshift with its dev tools

redis: venv ## make sure redis-server is installed and a Redis answers at $STACKSHIFT_TEST_REDIS_URL
	@bash .ci/ensure-redis.sh "$(BIN)/python"

chromium: ## make sure Debian's chromium is at /usr/bin/chromium (the dashboard's browser tests)
	@bash .ci/ensure-chromium.sh

demo: venv ## run the documentation's three flows end to end ($STACKSHIFT_REDIS_URL, local Redis, else memory://)
	$(BIN)/python -m workers.demo

lint: venv ## ruff (lint + format check) and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy stackshift
	$(BIN)/mypy tests/typing

test: lint redis chromium ## lint, type-check, then the whole test suite (starts a Redis if none is reachable)
	$(BIN)/pytest -q

test-faults: redis ## the fault-injection suite alone (tests/faults)
	$(BIN)/pytest tests/faults -q

format: venv ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: redis ## the benchmark suite (see bench/README.md)
	$(BIN)/python -m bench
