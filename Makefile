# The two commands the README promises:
#   make run    install into .venv and run the server with its data in ./var
#   make test   install with the test extras and run the whole suite, then ruff
# Installs are redone only when pyproject.toml changes (stamp files in .venv).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.stamp-run
TEST_STAMP := $(VENV)/.stamp-test

.PHONY: run test lint format clean

run: $(RUN_STAMP)
	$(BIN)/chatserver run --data-dir var

test: $(TEST_STAMP)
	$(BIN)/python -m pytest
	$(BIN)/ruff check .

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(TEST_STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e .
	touch $@

# The test extras include everything `run` needs, so this stamp serves both.
$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[test]'
	touch $@ $(RUN_STAMP)

# var/ holds the database and certificates of `make run`, so it is left alone.
clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache .hypothesis *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
