"""The kernel's one model: the stored outcome of an idempotent request."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class IdempotencyRecord(models.Model):
    """The stored outcome of a POST sent with an Idempotency-Key.

    The unique (user, scope, key) row is inserted and locked in the request's
    transaction; a concurrent duplicate waits on it and then replays the stored
    response. `fingerprint` detects a key reused with a different request.

    The response is kept as the bytes that were sent and their Content-Type, not as
    JSON: a jsonb column reorders keys, so a replay would be the same data but not
    the same response. `response_content_type` is empty for a response without a body.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="idempotency_records",
    )
    scope = models.CharField(max_length=100)
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_content = models.BinaryField(null=True, blank=True)
    response_content_type = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        # The table the model had in the reservations app: it moved here by state
        # alone (http_api 0001, reservations 0005), its rows untouched.
        db_table = "reservations_idempotencyrecord"
        constraints = [
            models.UniqueConstraint(
                fields=["user", "scope", "key"], name="idempotency_key_unique"
            ),
        ]
        indexes = [models.Index(fields=["created_at"], name="idempotency_created_idx")]

    def __str__(self) -> str:
        return f"{self.scope} {self.key}"
