"""The inbox's processed_at index becomes BRIN: one B-tree insert less per event.

Built concurrently, so consumers keep inserting while it is built on a large inbox.
"""

import django.contrib.postgres.indexes
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("events", "0005_outbox_xact_id"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="inboxentry",
            index=django.contrib.postgres.indexes.BrinIndex(
                autosummarize=True,
                fields=["processed_at"],
                name="inbox_processed_at_brin",
            ),
        ),
        migrations.RemoveIndex(
            model_name="inboxentry",
            name="events_inbo_process_04ad13_idx",
        ),
    ]
