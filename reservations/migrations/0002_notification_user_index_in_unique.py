"""Drop the notification's own user_id index: notification_once_per_event starts with
user_id and serves the same lookups.

Only the index is dropped. Django's AlterField would also drop and re-add the foreign
key, which re-checks every row of the table under lock.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("reservations", "0001_catalog_reservations_tickets_notifications"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "reservations_notification_user_id_b3ee3b12"',
                    'CREATE INDEX "reservations_notification_user_id_b3ee3b12" '
                    'ON "reservations_notification" ("user_id")',
                ),
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="notification",
                    name="user",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="notifications",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
        ),
    ]
