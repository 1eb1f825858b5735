"""Pipeline tables: the outbox (events waiting for Kafka) and the inbox (events handled)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.indexes import BrinIndex
from django.db import models
from django.db.models import Q

from events.fields import JSONTextField


class OutboxEvent(models.Model):
    """An event committed with its business change and not yet acknowledged by Kafka.

    `id` is allocated inside the writing transaction after `events.publish` took a
    per-key advisory lock, so for any one key, id order is commit order. The relay reads
    the rows committed since its last read's snapshot (the `xact_id` column, added by
    migration 0005) in id order, and so sends each key's rows in commit order. Once the
    broker has
    acknowledged a row, the relay deletes it (and, with OUTBOX_DELIVERY_LOG, records the
    delivery as a PublishedEvent in the same transaction); what stays here is the
    backlog and the parked rows.
    """

    id = models.BigAutoField(primary_key=True)
    event_id = models.UUIDField(unique=True)
    event_type = models.CharField(max_length=100)
    schema_version = models.PositiveSmallIntegerField()
    topic = models.CharField(max_length=249)
    key = models.CharField(max_length=255)
    # Text, not the report's JSONB: the relay only ever reads the bytes it sends, and
    # converting jsonb back to text on every fetch was a large share of its read.
    payload = JSONTextField(help_text="The whole envelope, exactly as sent.")
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

    Written only with OUTBOX_DELIVERY_LOG (it doubles the relay's database work). Slim
    on purpose (no payload): the Kafka topic holds the payload for its retention.
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
        # A B-tree, not BRIN: pruning deletes old rows and new ones fill the freed
        # pages, so after one retention period every BRIN range would span all times.
        indexes = [models.Index(fields=["processed_at"])]
        verbose_name_plural = "inbox entries"

    def __str__(self) -> str:
        return f"{self.handler} handled {self.event_id}"


class InboxDuplicateCount(models.Model):
    """Redeliveries the inbox absorbed: one row per batch that skipped some.

    Written in the transaction that skipped them, so the count survives the process
    (a killed consumer's in-memory counters do not) and is exact: a rolled-back run
    counts nothing, its retry counts once. Rows are only appended (sum them to read).
    """

    handler = models.CharField(max_length=200)
    count = models.IntegerField()
    counted_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["counted_at"], name="inbox_dup_counted_idx")]

    def __str__(self) -> str:
        return f"{self.handler} absorbed {self.count} at {self.counted_at}"


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


class DeadLetter(models.Model):
    """A message of a DLQ topic, stored by the dead-letter store consumer.

    One row per DLQ message: (dlq_topic, dlq_partition, dlq_offset) is unique, so the
    store may read a message again (a crash before its offset commit) without a double.
    The original bytes (key, value, headers) are kept as they were, so a requeue sends
    exactly what failed; the decoded payload is there for reading and searching.
    """

    class Status(models.TextChoices):
        NEW = "new", "new"
        REQUEUED = "requeued", "requeued"
        RESOLVED = "resolved", "resolved"
        DISCARDED = "discarded", "discarded"

    dlq_topic = models.CharField(max_length=249)
    dlq_partition = models.IntegerField()
    dlq_offset = models.BigIntegerField()
    key = models.BinaryField(null=True, blank=True)
    key_text = models.CharField(max_length=255, blank=True, db_index=True)
    value = models.BinaryField(null=True, blank=True)
    headers = models.JSONField(
        default=list,
        help_text='[[name, text]] in order; [name, {"base64": ...}] for non-UTF-8 bytes.',
    )
    payload = models.JSONField(null=True, blank=True)
    event_id = models.UUIDField(null=True, blank=True, db_index=True)
    event_type = models.CharField(max_length=100, blank=True)
    error_class = models.CharField(max_length=255, blank=True)
    error_message = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    original_topic = models.CharField(max_length=249, blank=True)
    original_partition = models.IntegerField(null=True, blank=True)
    original_offset = models.BigIntegerField(null=True, blank=True)
    original_timestamp = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    handler = models.CharField(max_length=200, blank=True)
    consumer_group = models.CharField(max_length=255, blank=True)
    replay_count = models.PositiveIntegerField(
        default=0, help_text="How often this message had been requeued before."
    )
    first_failed_at = models.DateTimeField(null=True, blank=True)
    last_failed_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.NEW)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    stored_at = models.DateTimeField(auto_now_add=True)
    # Set while a requeue sends this letter (events.dead_letters.requeue): no other
    # requeue takes it until the claim is cleared or its time is past.
    requeue_claim = models.UUIDField(null=True, blank=True, editable=False)
    requeue_claimed_until = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["dlq_topic", "dlq_partition", "dlq_offset"],
                name="deadletter_once_per_dlq_message",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "original_topic"]),
            models.Index(fields=["last_failed_at"]),
        ]
        permissions = [("requeue_deadletter", "Can requeue dead letters")]

    def __str__(self) -> str:
        return (
            f"{self.event_type or 'undecodable'} {self.event_id or ''} "
            f"from {self.original_topic}[{self.original_partition}]"
            f"@{self.original_offset}"
        )


class DeadLetterAction(models.Model):
    """One step of a dead letter's history: who did what, when, and where it went."""

    class Kind(models.TextChoices):
        REQUEUED = "requeued", "requeued"
        REQUEUE_REFUSED = "requeue_refused", "requeue refused (replay cap)"
        REQUEUE_FAILED = "requeue_failed", "requeue failed (broker)"
        PAYLOAD_EDITED = "payload_edited", "payload edited"
        RESOLVED = "resolved", "resolved"
        DISCARDED = "discarded", "discarded"

    dead_letter = models.ForeignKey(
        DeadLetter, on_delete=models.CASCADE, related_name="actions"
    )
    action = models.CharField(max_length=20, choices=Kind.choices)
    actor = models.CharField(max_length=150, help_text='A username, or "cli".')
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    note = models.TextField(blank=True)
    from_status = models.CharField(max_length=20, blank=True)
    to_status = models.CharField(max_length=20, blank=True)
    payload = models.JSONField(
        null=True, blank=True, help_text="The edited payload that was sent, if any."
    )
    requeue_topic = models.CharField(max_length=249, blank=True)
    requeue_partition = models.IntegerField(null=True, blank=True)
    requeue_offset = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.action} by {self.actor} at {self.created_at:%Y-%m-%d %H:%M:%S}"


class ConsumerLag(models.Model):
    """How far a consumer group is behind on one partition, as its consumer last said.

    The consumers write it (events.observability.lag.record_lag, every few seconds,
    from the watermarks their loop already has), so the admin index reads a table
    rather than opening a Kafka client per render. A row that stopped being reported
    is stale, not zero: nobody is consuming that partition for the group right now.
    """

    group = models.CharField(max_length=255)
    topic = models.CharField(max_length=249)
    partition = models.IntegerField()
    lag = models.BigIntegerField(help_text="High watermark minus the group's position.")
    reported_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["group", "topic", "partition"],
                name="consumer_lag_once_per_partition",
            ),
        ]
        verbose_name = "consumer lag"
        verbose_name_plural = "consumer lag"

    def __str__(self) -> str:
        return f"{self.group} {self.topic}[{self.partition}]: {self.lag}"


class OutboxSharding(models.Model):
    """How many shards the relays divide the outbox into: one row (id 1), kept by them.

    Stored so that a relay started with another OUTBOX_RELAY_SHARDS than the running
    ones refuses: a key would map to two shards with two leaders, and lose its order
    (events.relay.shards).
    """

    shards = models.PositiveSmallIntegerField()
    changed_at = models.DateTimeField()

    class Meta:
        verbose_name = "outbox sharding"
        verbose_name_plural = "outbox sharding"

    def __str__(self) -> str:
        return f"{self.shards} outbox shard(s)"
