"""Idempotency records keep the response's bytes and Content-Type, not a jsonb body.

jsonb reorders object keys, so a replay built from it carried the same data as the
first response but not the same bytes. Rows written before this migration are
converted here rather than replayed from a second, legacy column: their original
bytes are gone either way, and converting keeps one replay path in the code. Each old
body is rendered the way DRF's JSONRenderer renders a response by default (compact,
UTF-8, `application/json`), so an old key still replays the same status and the same
JSON; only its key order may differ from what the client saw first, as it already did.
A row without a body (no response stored yet, or an empty one) gets no content.
"""

import json

from django.db import migrations, models
from rest_framework.renderers import JSONRenderer

BATCH = 1000


def _convert(queryset, fields, convert):
    """Apply `convert` to every row of `queryset` and save `fields`, BATCH at a time."""
    batch = []
    for record in queryset.iterator(chunk_size=BATCH):
        convert(record)
        batch.append(record)
        if len(batch) == BATCH:
            queryset.model.objects.bulk_update(batch, fields)
            batch = []
    if batch:
        queryset.model.objects.bulk_update(batch, fields)


def body_to_bytes(apps, schema_editor):
    IdempotencyRecord = apps.get_model("reservations", "IdempotencyRecord")
    renderer = JSONRenderer()

    def convert(record):
        record.response_content = renderer.render(record.response_body)
        record.response_content_type = "application/json"

    _convert(
        IdempotencyRecord.objects.filter(response_body__isnull=False),
        ["response_content", "response_content_type"],
        convert,
    )


def bytes_to_body(apps, schema_editor):
    IdempotencyRecord = apps.get_model("reservations", "IdempotencyRecord")

    def convert(record):
        content = bytes(record.response_content or b"")
        record.response_body = json.loads(content) if content else None

    _convert(
        IdempotencyRecord.objects.filter(
            response_content_type__startswith="application/json"
        ),
        ["response_body"],
        convert,
    )


class Migration(migrations.Migration):
    dependencies = [
        ("reservations", "0003_notification_kinds_written_by_handlers"),
    ]

    operations = [
        migrations.AddField(
            model_name="idempotencyrecord",
            name="response_content",
            field=models.BinaryField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="idempotencyrecord",
            name="response_content_type",
            field=models.CharField(blank=True, default="", max_length=255),
        ),
        migrations.RunPython(body_to_bytes, bytes_to_body, elidable=True),
        migrations.RemoveField(
            model_name="idempotencyrecord",
            name="response_body",
        ),
    ]
