"""The dead-letter product.

DLQ messages stored as rows, browsed in the admin, requeued or discarded by operators
and the CLI.
"""
