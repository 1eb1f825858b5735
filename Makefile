# The two commands: `make run` (the whole system) and `make test` (the whole suite).
.PHONY: install services stop migrate run test lint format bench

VENV := .venv/bin

install:
	@bash infra/bootstrap.sh

services: install
	@bash infra/services.sh start

stop:
	@bash infra/services.sh stop

migrate: services
	$(VENV)/python manage.py migrate --no-input -v 0
	$(VENV)/python manage.py create_topics

run: migrate
	$(VENV)/python manage.py seed_demo
	@echo
	@echo "  API        http://127.0.0.1:8000/api/        docs: http://127.0.0.1:8000/api/docs/"
	@echo "  Admin      http://127.0.0.1:8000/admin/      (admin / admin)"
	@echo "  Metrics    web /metrics, relay :9101, consumers :9102+, worker :9110; Kafka 127.0.0.1:9092"
	@echo "  Logs       below; Kafka: .local/kafka/logs. Ctrl-C stops everything."
	@echo
	@bash infra/run.sh

lint:
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .

format:
	$(VENV)/ruff check --fix .
	$(VENV)/ruff format .

test: services
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/pytest

bench: migrate
	$(VENV)/python -m bench
