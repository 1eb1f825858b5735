# The two commands: `make run` (the whole system) and `make test` (the whole suite).
.PHONY: install services stop migrate run dev test test-cdc test-bench lint format bench chaos chaos-sharded chaos-cdc chaos-short

VENV := .venv/bin
# Which relay `make run` / `make dev` start: polling (relay_outbox) or cdc (Debezium in
# Kafka Connect, infra/connect). See the README's "CDC mode".
RELAY ?= polling

install:
	@bash infra/bootstrap.sh

services: install
	@bash infra/services.sh start

stop:
	@bash infra/services.sh stop

migrate: services
	$(VENV)/python manage.py migrate --no-input -v 0
	$(VENV)/python manage.py create_topics

# The web under gunicorn (config/gunicorn.py) on 127.0.0.1:8000, as in production.
run: migrate
	$(VENV)/python manage.py seed_demo
	@bash infra/banner.sh
	@RELAY=$(RELAY) WEB_SERVER=gunicorn bash infra/run.sh

# The same, with Django's development server (autoreload) instead of gunicorn.
dev: migrate
	$(VENV)/python manage.py seed_demo
	@bash infra/banner.sh
	@RELAY=$(RELAY) WEB_SERVER=dev bash infra/run.sh

lint:
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/mypy

format:
	$(VENV)/ruff check --fix .
	$(VENV)/ruff format .

test: services
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/mypy
	$(VENV)/pytest

# The delivery tests against the CDC relay (pytest -m cdc): starts Kafka Connect with
# Debezium (infra/connect) beside the services, stops it afterwards, keeps pytest's status.
test-cdc: services
	@bash infra/connect/connect.sh start
	@status=0; $(VENV)/pytest -m cdc || status=$$?; \
	  bash infra/connect/connect.sh stop; exit $$status

# The benchmark harness's short run (BENCH_SCALE=0.05, about 4 minutes; every figure
# the report promises, no figure asserted): tests/test_bench.py, `pytest -m bench`.
test-bench: services
	$(VENV)/pytest -m "bench and not cdc"

# Every benchmark against Kafka's own tools (bench/): results/latest.json and REPORT.md.
# About 15 minutes, plus 5-10 the first time (aging its database); BENCH_SCALE=0.2 is
# quicker. Starts Kafka Connect for the CDC steps (`python -m bench --skip cdc` without).
bench: migrate
	@bash infra/connect/connect.sh start
	$(VENV)/python -m bench

# Faults under load, checked afterwards (bench/chaos): the long run on a local 3-node
# Kafka cluster, about 100,000 events and 100 faults; its figures go to
# bench/results/chaos.json. PostgreSQL is restarted during it: a cluster of the run's
# own (Debian's `chaos` cluster, port 5442), so `make run` beside it is not disturbed.
CHAOS_ARGS ?= --nodes 3 --flows 26000 --faults 100
chaos: services
	$(VENV)/python -m bench.chaos $(CHAOS_ARGS)

# The same faults against three relays sharing three outbox shards (OUTBOX_RELAY_SHARDS).
chaos-sharded: services
	$(VENV)/python -m bench.chaos $(CHAOS_ARGS) --relays 3 --shards 3 --out bench/results/chaos-sharded.json

# The same faults against the CDC relay: two Kafka Connect workers with the Debezium
# connector in relay_outbox's place (a relay kill is a kill -9 of the task's worker).
chaos-cdc: services
	$(VENV)/python -m bench.chaos $(CHAOS_ARGS) --relay cdc --relays 2 --out bench/results/chaos-cdc.json

# The short run that the test suite also makes (single node, about 2,000 events).
chaos-short: services
	$(VENV)/python -m bench.chaos --flows 500 --faults 10 --relays 2 --shards 2 --out .local/chaos-short.json
