# The two commands a user needs: `make demo` and `make test` (see README.md).
# Everything installs into .venv from this project's own pyproject.toml.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SOURCES := coverwatch agent collector geo dashboards provisioning simulator tests bench

.PHONY: test lint typecheck pytest demo venv clean

venv: $(STAMP)

# Reinstall when the dependency declaration changes; editable so tests see the tree.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[agent,server,dev]'
	touch $(STAMP)

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff format --check $(SOURCES)
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/lint-imports --no-cache  # the import layers: [tool.importlinter] in pyproject.toml

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

# Reserved: the whole system on one machine arrives with the demo issue.
demo: $(STAMP)
	$(BIN)/coverwatch demo

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build *.egg-info

.PHONY: bench-protocol
bench-protocol: $(STAMP)
	$(BIN)/python -m bench.protocol_decode

.PHONY: bench-ingest
bench-ingest: $(STAMP)
	$(BIN)/python -m bench.ingest

# The same phases on both storage layouts in one run, each in a throwaway database on the
# machine's PostgreSQL 15 servers: plain (15/main) and TimescaleDB (15/ts, made by
# ../shared/timescaledb/install.sh). Override the URLs or BENCH_INGEST_ARGS as needed.
BENCH_PLAIN_URL ?= postgresql://postgres@127.0.0.1:5432/postgres
BENCH_TIMESCALE_URL ?= postgresql://postgres@127.0.0.1:5433/postgres
BENCH_INGEST_ARGS ?= --probes 1000 --rounds 3

.PHONY: bench-ingest-layouts
bench-ingest-layouts: $(STAMP)
	$(BIN)/python -m bench.ingest --database-url $(BENCH_PLAIN_URL) \
		--database-url $(BENCH_TIMESCALE_URL) $(BENCH_INGEST_ARGS)

# The truth benchmark (issue #14 item 6): verdicts against the simulator's hidden truth.
BENCH_TRUTH_ARGS ?= --scenario sparse --seeds 1-5
.PHONY: bench-truth
bench-truth: $(STAMP)
	$(BIN)/python -m bench.truth --database-url $(BENCH_PLAIN_URL) $(BENCH_TRUTH_ARGS)

.PHONY: bench-ack-traffic
bench-ack-traffic: $(STAMP)
	$(BIN)/python -m bench.ack_traffic

# The province benchmark (issue #12 item 4): 10,000 villages, 2,000 probes, 30 days, on both
# storage layouts (BENCH_PLAIN_URL, BENCH_TIMESCALE_URL); needs wrk (apt-get install wrk).
.PHONY: bench-geo
bench-geo: $(STAMP)
	$(BIN)/python -m bench.geo --plain-url $(BENCH_PLAIN_URL) --timescale-url $(BENCH_TIMESCALE_URL) \
		$(BENCH_GEO_ARGS)
