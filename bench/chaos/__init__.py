"""`make chaos`: the whole system under faults, checked Jepsen-style afterwards.

Reservations, cancellations and payments go through the real API (gunicorn) while a
seeded fault injector kills relays and consumers, stops and kills brokers, restarts
PostgreSQL and injects poison messages. When the load and the faults are over and the
pipeline has drained, a checker reads the database and Kafka itself and counts what
was lost, doubled, reordered or dead-lettered. Entry point: `python -m bench.chaos`
(bench/chaos/__main__.py); the result goes to bench/results/chaos.json.

Modules: `stack` (the processes and the services they use, and a supervisor for the
relays), `driver` (API clients), `faults` (the injector), `checker` (the verdict).
"""
