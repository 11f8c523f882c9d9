# The two commands the README promises:
#   make run    install into .venv and run the server with its data in ./var
#               (DATA_DIR=dir for another directory; CHATSERVER_CONFIG=file for a config)
#   make test   install with the test extras and run the whole suite, then ruff and mypy
# and the benchmark (bench/README.md):
#   make bench  every scenario against chatserver and the reference servers found; the table
#               is printed and written to bench/build/results.md
#   make soak   mixed load against a real server for SOAK_MINUTES (default 30): are its memory
#               and file descriptors flat?  Not part of `make test`.
#   make test-cluster-long  the cluster chaos tests' long forms (a minute-long Redis and
#               PostgreSQL outage, three nodes with one killed under load); not in `make test`.
#   make cluster  PostgreSQL, Redis and three nodes sharing them (HAProxy in front when it is
#               installed) on this machine, to try cluster mode; Ctrl-C stops it all.
#   make irctest  the irctest IRC conformance suite (a checkout named by IRCTEST_DIR) against a
#               fresh server per test (protocols/irc/README.md).  Not part of `make test`.
# Installs are redone only when pyproject.toml changes (stamp files in .venv).
#   make web    install the web client (Converse.js, pinned by web/package-lock.json) into
#               web/node_modules when npm is present; `run` and `test` do it too.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.stamp-run
TEST_STAMP := $(VENV)/.stamp-test

SOAK_MINUTES ?= 30
# pytest-xdist workers for `make test` (TEST_WORKERS=0: one process, no workers).
TEST_WORKERS ?= 2
DATA_DIR ?= var

.PHONY: run test lint format clean bench soak irctest web cluster test-cluster-long

run: $(RUN_STAMP) web
	$(BIN)/chatserver run --data-dir $(DATA_DIR)

test: $(TEST_STAMP) web
	# The servers the tests start import the project from bytecode made once here (an
	# environment with PYTHONDONTWRITEBYTECODE would compile it again at every start).
	$(BIN)/python -m compileall -q chatserver protocols
	# Two workers, each taking whole files (module fixtures are made once); the slowest
	# tests are listed: the default run must stay within its time budget.
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=25
	$(BIN)/ruff check .
	$(BIN)/mypy

test-cluster-long: $(TEST_STAMP)
	CHATSERVER_CLUSTER_LONG=1 $(BIN)/python -m pytest tests/cluster -m cluster_long -s

soak: $(TEST_STAMP)
	$(BIN)/python tools/soak.py --minutes $(SOAK_MINUTES)

cluster: $(TEST_STAMP)
	$(BIN)/python tools/cluster.py

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(TEST_STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# irctest runs from its own virtualenv (its pinned pytest is not ours); the controller in
# tools/irctest starts `chatserver run` with this checkout's Python.
IRCTEST_DIR ?=
IRCTEST_VENV := .venv-irctest
IRCTEST_MARKERS ?= not implementation-specific and not deprecated and not strict
IRCTEST_ARGS ?=

irctest: $(TEST_STAMP)
	@test -n "$(IRCTEST_DIR)" -a -f "$(IRCTEST_DIR)/conftest.py" || { \
		echo "IRCTEST_DIR must name an irctest checkout:"; \
		echo "  git clone https://github.com/progval/irctest && make irctest IRCTEST_DIR=\$$PWD/irctest"; \
		exit 2; }
	test -x $(IRCTEST_VENV)/bin/python || $(PYTHON) -m venv $(IRCTEST_VENV)
	$(IRCTEST_VENV)/bin/python -m pip install -q -r "$(IRCTEST_DIR)/requirements.txt"
	cd "$(IRCTEST_DIR)" && \
		CHATSERVER_PYTHON="$(CURDIR)/$(BIN)/python" PYTHONPATH="$(CURDIR)/tools/irctest" \
		"$(CURDIR)/$(IRCTEST_VENV)/bin/python" -m pytest --controller chatserver_controller \
		-p chatserver_skips \
		-m "$(IRCTEST_MARKERS)" $(IRCTEST_ARGS)

# The load generator (C, epoll); bench/build/ is not committed.
LOADGEN := bench/build/loadgen
BENCH_STAMP := $(VENV)/.stamp-bench

bench: $(TEST_STAMP) $(BENCH_STAMP) $(LOADGEN)
	$(BIN)/python bench/run.py --profile --output bench/build/results.md --json bench/build/results.json

$(LOADGEN): bench/loadgen.c
	mkdir -p bench/build
	gcc -O2 -Wall -Wextra -o $@ bench/loadgen.c

# py-spy samples chatserver (--profile): IRC fan-out, many rooms, registration.
$(BENCH_STAMP): | $(BIN)/python
	$(BIN)/python -m pip install py-spy
	touch $@

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e .
	touch $@

# The test extras include everything `run` needs, so this stamp serves both.
$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[test]'
	touch $@ $(RUN_STAMP)

# The web client: without npm the server still runs, and its page says how to get the client.
WEB_STAMP := web/node_modules/.stamp

web: $(WEB_STAMP)

$(WEB_STAMP): web/package.json web/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		cd web && npm ci --ignore-scripts --no-audit --no-fund && touch node_modules/.stamp; \
	else \
		echo "npm not found: the web client is not installed (http://localhost:8080/ says how to get it)"; \
	fi

# var/ holds the database and certificates of `make run`, so it is left alone.
clean:
	rm -rf $(VENV) $(IRCTEST_VENV) build web/node_modules .pytest_cache .ruff_cache .hypothesis *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
