# alchemy-hex: the two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# PgBouncer for its test, unpacked from Debian's packages (see tests/fetch_pgbouncer.sh).
export HEX_PGBOUNCER_DIR ?= $(or $(TMPDIR),/tmp)/alchemy-hex-pgbouncer
# Prometheus for the scrape test, unpacked from Debian's package (see tests/fetch_prometheus.sh).
export HEX_PROMETHEUS_DIR ?= $(or $(TMPDIR),/tmp)/alchemy-hex-prometheus

.PHONY: demo demo-faults serve test lint typecheck imports unit bench bench-http bench-instructions pgbouncer prometheus clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,demo,telemetry,pictures]'
	touch $(STAMP)

# ARGS= passes options on, e.g. `make demo ARGS="--seconds 20 --workers 32"`.
demo: $(STAMP)
	$(BIN)/alchemy-hex demo $(ARGS)

# About 30 s: a replica stopped and restarted, the writer restarted, latency on its path, under the
# demo's load; then the summary and demo-faults-timeline.png (`make demo ARGS=--faults` is the same).
demo-faults: $(STAMP)
	$(BIN)/alchemy-hex demo --faults $(ARGS)

# The HTTP service on 127.0.0.1:8000 (HOST=, PORT= to change); a throwaway primary + replica without DATABASE_URL.
serve: $(STAMP)
	$(BIN)/alchemy-hex serve $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT))

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy
	# alembic/ is not a package (its name is the library's), so its scripts are checked on their own.
	cd alembic && MYPYPATH=.. ../$(BIN)/mypy --strict --config-file /dev/null env.py versions

imports: $(STAMP)
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit tests/contract

pgbouncer:
	@bash tests/fetch_pgbouncer.sh "$(HEX_PGBOUNCER_DIR)" || echo "PgBouncer could not be fetched: its test will be skipped"

prometheus:
	@bash tests/fetch_prometheus.sh "$(HEX_PROMETHEUS_DIR)" || echo "Prometheus could not be fetched: its test will be skipped"

test: lint typecheck imports pgbouncer prometheus
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python -m tests.benchmarks.provider_bench
	$(BIN)/python -m tests.benchmarks.adaptive_bench
	$(BIN)/python -m tests.benchmarks.outage_bench
	$(BIN)/python -m tests.benchmarks.spike_bench

# Client instructions per operation under callgrind (minutes): the figure a loaded machine cannot move.
bench-instructions: $(STAMP)
	$(BIN)/python -m tests.benchmarks.instructions

# alchemy-hex serve against a plain FastAPI + SQLAlchemy server, open loop, on loopback (about 3 minutes).
bench-http: $(STAMP)
	$(BIN)/python -m tests.benchmarks.http_bench

# Every fault scenario at full length on throwaway servers (about two minutes); writes chaos-results.json.
# make runs from the project root, which `python -m` puts on sys.path for the tests package.
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos.run

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache
