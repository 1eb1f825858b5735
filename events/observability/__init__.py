"""What the pipeline tells operators.

Prometheus metrics, the audit log of every outcome, trace ids carried from request to
handler.
"""
