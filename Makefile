# cnpg-trace-summaries. Quick start: `make run`, then `make test`.
# Every target installs what it needs first (scripts/bootstrap.sh, then .venv).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
DEMO_TRACES ?= 5000
# The suite mostly waits (for servers, for pg_cron's tick): more workers than cores.
WORKERS ?= 4
PYTEST_ARGS ?=
PARALLEL = -n $(WORKERS) --dist loadgroup

.PHONY: run stop test test-fast extensions lint format bench deps clean help

help:
	@echo "make run        local PostgreSQL with pg_cron, migrate, load demo spans, print summaries"
	@echo "make test       ruff, then the whole suite on throwaway PostgreSQL servers (15 and 18)"
	@echo "make extensions build TimescaleDB, and pg_cron for 18, for the test servers (make test does)"
	@echo "make test-fast  the suite without the tests that wait for a real pg_cron tick"
	@echo "make stop       stop the local PostgreSQL of 'make run'"
	@echo "make bench      benchmark listing and refresh, both modes (bench/results/README.md)"

deps:
	@bash scripts/bootstrap.sh

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,pg18]'
	@touch $(STAMP)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,pg18,bench]'
	@touch $(BENCH_STAMP)

run: deps $(STAMP)
	@$(BIN)/trace-summaries local start
	@DATABASE_URL="$$($(BIN)/trace-summaries local url)" $(BIN)/alembic upgrade head
	@DATABASE_URL="$$($(BIN)/trace-summaries local url)" $(BIN)/trace-summaries demo --traces $(DEMO_TRACES)
	@echo
	@echo "The local PostgreSQL keeps running (stop it with: make stop). Connect with:"
	@echo "  psql \"$$($(BIN)/trace-summaries local url)\""
	@echo "Or use it from alembic and the console command (they find it without DATABASE_URL):"
	@echo "  . $(BIN)/activate && alembic current && trace-summaries list"

stop: $(STAMP)
	@$(BIN)/trace-summaries local stop

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# TimescaleDB for every server, pg_cron where no package has it (cnpg_trace_summaries.dev.extensions:
# pinned sources, builds cached in ~/.cache). A failed build fails the run only under
# TRACE_SUMMARIES_NO_SKIPS=1 (.ci/run); otherwise the tests that need it skip, saying why.
extensions: deps $(STAMP)
	@bash scripts/bootstrap.sh $$($(BIN)/python -m cnpg_trace_summaries.dev.extensions --packages); \
	  $(BIN)/python -m cnpg_trace_summaries.dev.extensions || [ "$$TRACE_SUMMARIES_NO_SKIPS" != 1 ]

test: deps $(STAMP) lint extensions
	$(BIN)/pytest $(PARALLEL) $(PYTEST_ARGS)

test-fast: deps $(STAMP) lint extensions
	$(BIN)/pytest $(PARALLEL) -m "not pg_cron_tick" $(PYTEST_ARGS)

# BENCH_ARGS, e.g. --traces 1000000 for about 10M spans
bench: deps $(BENCH_STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean: stop
	rm -rf .local $(VENV)
