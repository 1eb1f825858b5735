"""What the pipeline tells operators.

Prometheus metrics, the audit log of every outcome, and consumer lag as the consumers
report it (read by the admin index). Imports only `events.core` and the models.
"""
