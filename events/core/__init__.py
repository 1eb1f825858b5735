"""The pipeline's vocabulary, shared by every other part.

Event types, the envelope and what a handler receives (`Delivery`), the header names
and codecs, trace ids, `publish` (the outbox write), the handler registry, settings,
the Kafka client factory, topic administration and bulk inserts. It imports nothing
from the other subpackages; they all import it.
"""
