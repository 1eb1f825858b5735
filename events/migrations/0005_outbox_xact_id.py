"""Record which transaction wrote each outbox row, so the relay can read by commit."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("events", "0004_outbox_payload_as_text")]

    operations = [
        # Not a model field: only the relay's SQL reads it, and every insert gets the
        # default. See events.relay.window.FETCH_SQL for why.
        migrations.RunSQL(
            "ALTER TABLE events_outboxevent "
            "ADD COLUMN xact_id xid8 NOT NULL DEFAULT pg_current_xact_id()",
            "ALTER TABLE events_outboxevent DROP COLUMN xact_id",
        ),
    ]
