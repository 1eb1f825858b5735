"""The outbox relay.

The one process (a leader, with hot standbys) that moves committed outbox rows to Kafka
in order.
"""
