"""The consumers.

Kafka messages to registered handlers, with the inbox, retries, backoff and dead-letter
topics.
"""
