"""The pipeline's vocabulary, shared by every other part.

Event types and the envelope, the header names and codecs, `publish` (the outbox write),
the handler registry, settings, the Kafka client factory and topic administration.
"""
