#!/usr/bin/env bash
# What `make run` and `make dev` print before the logs: where to look, how to log in.
cat <<'TEXT'

  API        http://127.0.0.1:8000/api/        docs: /api/docs/ (Swagger UI), /api/redoc/
  Admin      http://127.0.0.1:8000/admin/      (admin / admin)
  Log in     curl -s -d username=alice -d password=password http://127.0.0.1:8000/api/auth/token/
  Metrics    web /metrics, relay :9101, consumers :9102+, worker :9110; Kafka 127.0.0.1:9092
  Logs       below; Kafka: .local/kafka/logs. Ctrl-C stops everything.

TEXT
