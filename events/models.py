"""Pipeline tables: the outbox (events waiting for Kafka) and the inbox (events handled)."""

from __future__ import annotations

from django.contrib.postgres.indexes import BrinIndex
from django.db import models
from django.db.models import Q


class OutboxEvent(models.Model):
    """An event committed with its business change and not yet acknowledged by Kafka.

    `id` is allocated inside the writing transaction after `events.publish` took a
    per-key advisory lock, so for any one key, id order is commit order: the relay sends
    rows in id order and therefore in commit order per key. Once the broker has
    acknowledged a row, the relay deletes it and records the delivery as a
    PublishedEvent in the same transaction; what stays here is the backlog and the
    parked rows.
    """

    id = models.BigAutoField(primary_key=True)
    event_id = models.UUIDField(unique=True)
    event_type = models.CharField(max_length=100)
    schema_version = models.PositiveSmallIntegerField()
    topic = models.CharField(max_length=249)
    key = models.CharField(max_length=255)
    payload = models.JSONField(help_text="The whole envelope, as sent.")
    headers = models.JSONField(default=dict)
    aggregate_type = models.CharField(max_length=100)
    aggregate_id = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)
    parked_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["id"],
                name="outbox_pending_idx",
                condition=Q(parked_at__isnull=True),
            ),
        ]
        verbose_name = "outbox event"

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id} -> {self.topic}"

    @property
    def state(self) -> str:
        return "parked" if self.parked_at else "pending"


class PublishedEvent(models.Model):
    """Where an outbox event landed: written when the broker acknowledged it.

    Slim on purpose (no payload): the relay inserts one per event at full speed, and
    the Kafka topic holds the payload for its retention period.
    """

    outbox_id = models.BigIntegerField()
    event_id = models.UUIDField(unique=True)
    event_type = models.CharField(max_length=100)
    topic = models.CharField(max_length=249)
    key = models.CharField(max_length=255)
    aggregate_type = models.CharField(max_length=100)
    aggregate_id = models.CharField(max_length=255)
    partition = models.IntegerField()
    offset = models.BigIntegerField()
    created_at = models.DateTimeField()
    sent_at = models.DateTimeField()

    class Meta:
        indexes = [BrinIndex(fields=["sent_at"], name="published_sent_at_brin")]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id} at {self.topic}[{self.partition}]@{self.offset}"


class InboxEntry(models.Model):
    """Proof that `handler` processed `event_id`: written in the handler's transaction."""

    event_id = models.UUIDField()
    handler = models.CharField(max_length=200)
    topic = models.CharField(max_length=249)
    partition = models.IntegerField()
    offset = models.BigIntegerField()
    attempt = models.PositiveSmallIntegerField(default=1)
    processed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["event_id", "handler"], name="inbox_once"),
        ]
        indexes = [models.Index(fields=["processed_at"])]
        verbose_name_plural = "inbox entries"

    def __str__(self) -> str:
        return f"{self.handler} handled {self.event_id}"


class FailedAttempt(models.Model):
    """One failed run of a handler on an event, and what the runner did about it."""

    class Outcome(models.TextChoices):
        RETRY_SCHEDULED = "retry_scheduled", "retry scheduled"
        RETRIED_IN_PLACE = "retried_in_place", "retried in place"
        DEAD_LETTERED = "dead_lettered", "dead-lettered"

    event_id = models.UUIDField(null=True, blank=True)
    handler = models.CharField(max_length=200, blank=True)
    topic = models.CharField(max_length=249)
    partition = models.IntegerField()
    offset = models.BigIntegerField()
    attempt = models.PositiveSmallIntegerField()
    exception_class = models.CharField(max_length=255)
    message = models.TextField(blank=True)
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["event_id", "handler"]),
            models.Index(fields=["failed_at"]),
        ]

    def __str__(self) -> str:
        return (
            f"{self.handler} attempt {self.attempt} on {self.event_id}: {self.outcome}"
        )
