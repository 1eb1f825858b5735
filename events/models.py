"""Pipeline tables: the outbox (events waiting for Kafka) and the inbox (events handled)."""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class OutboxEvent(models.Model):
    """An event committed with its business change and waiting to be sent to Kafka.

    `id` is allocated inside the writing transaction after `events.publish` took a
    per-key advisory lock, so for any one key, id order is commit order: the relay sends
    rows in id order and therefore in commit order per key.
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
    sent_at = models.DateTimeField(null=True, blank=True)
    partition = models.IntegerField(null=True, blank=True)
    offset = models.BigIntegerField(null=True, blank=True)
    parked_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["id"],
                name="outbox_pending_idx",
                condition=Q(sent_at__isnull=True, parked_at__isnull=True),
            ),
            models.Index(fields=["aggregate_type", "aggregate_id"]),
            models.Index(fields=["sent_at"]),
        ]
        verbose_name = "outbox event"

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id} -> {self.topic}"

    @property
    def state(self) -> str:
        if self.parked_at:
            return "parked"
        return "sent" if self.sent_at else "pending"


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
