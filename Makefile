# The two commands: `make run` and `make test`. Everything else supports them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test check lint typecheck services unit bench clean

run: $(STAMP)
	$(BIN)/timefuse serve

test: $(STAMP) services check
	$(BIN)/pytest

$(STAMP): pyproject.toml examples/timefuse-file/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -e examples/timefuse-file
	touch $(STAMP)

# Real PostgreSQL and Kafka for the integration tests: installed or fetched here, started by
# the test session itself (tests/support), stopped when it ends. Chromium (Debian's) for the
# console's browser tests, driven headless by Playwright.
services:
	bash scripts/ensure-postgres.sh
	bash scripts/ensure-chromium.sh
	bash scripts/kafka/fetch-kafka.sh

check: lint typecheck

lint: $(STAMP)
	$(BIN)/ruff check timefuse tests examples
	$(BIN)/ruff format --check timefuse tests examples
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit

clean:
	rm -rf $(VENV) build *.egg-info
