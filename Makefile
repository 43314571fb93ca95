# The two commands: `make run` and `make test`. Everything else supports them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test check lint typecheck services unit mutants mutants-recheck planted-bugs bench clean

run: $(STAMP)
	$(BIN)/timefuse serve

# Two workers (each with its own PostgreSQL and Kafka when its tests need them); the slowest
# tests are end-to-end runs of real processes that mostly wait, so they overlap well.
TEST_WORKERS ?= 2

test: $(STAMP) services check
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal

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

# Mutation testing (not part of `make test`): mutmut plants bugs in timefuse/domain and
# timefuse/service one at a time and runs the fast tiers on each (configured in pyproject.toml,
# [tool.mutmut]); results are kept in ./mutants, so a second run redoes only what changed.
# MUTANTS_JOBS sets how many mutants are tested at once.
MUTANTS_JOBS ?= 2
mutants: $(STAMP)
	$(BIN)/mutmut run --max-children $(MUTANTS_JOBS)
	$(BIN)/python scripts/mutation_report.py

# A verdict is kept until the mutated function changes: after adding tests, check the
# survivors again.
mutants-recheck: $(STAMP)
	$(BIN)/mutmut run --max-children $(MUTANTS_JOBS) \
		$$($(BIN)/python scripts/mutation_report.py --names survived)
	$(BIN)/python scripts/mutation_report.py

# Known bugs planted one at a time in a copy of the tree: which tier catches each.
planted-bugs: $(STAMP)
	$(BIN)/python scripts/planted_bugs.py

clean:
	rm -rf $(VENV) build *.egg-info
