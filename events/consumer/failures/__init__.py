"""Failure handling, as separate parts the handler runner composes.

As Spring Kafka separates its DefaultErrorHandler into a classifier, a BackOff and a
DeadLetterPublishingRecoverer: `classifier` decides whether a failure is worth a
retry, `router` where a failed event goes next (a retry topic, a retry in place, or the
dead-letter topic), `publisher` sends retry and dead-letter messages and confirms them,
`storm_guard` brakes a flood of dead letters, `attempts` records each failure, and
`handling` runs one failed unit through them. The backoff itself is
`events.core.conf.RetryPolicy`, because settings build it.
"""
