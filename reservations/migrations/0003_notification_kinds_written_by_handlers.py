"""Notification kinds are the ones the handlers write: add ticket_issued, drop the two
that nothing ever wrote, and refuse any other kind in the database.

The choices change is state only (Django emits no SQL for it). The check constraint is
added NOT VALID: PostgreSQL then checks every new or updated row at once but does not
scan the existing rows under an ACCESS EXCLUSIVE lock, which on this table (one row
per consumed event) would stop the consumers for the scan. Every kind a handler has
written is in the list, so `ALTER TABLE reservations_notification VALIDATE CONSTRAINT
notification_kind_valid` (a lock that lets writes through) can be run later.
"""

from django.db import migrations, models

KINDS = [
    "reservation_created",
    "reservation_cancelled",
    "hold_expired",
    "ticket_issued",
]


class Migration(migrations.Migration):
    dependencies = [
        ("reservations", "0002_notification_user_index_in_unique"),
    ]

    operations = [
        migrations.AlterField(
            model_name="notification",
            name="kind",
            field=models.CharField(
                choices=[
                    ("reservation_created", "Reservation created"),
                    ("reservation_cancelled", "Reservation cancelled"),
                    ("hold_expired", "Hold expired"),
                    ("ticket_issued", "Ticket issued"),
                ],
                max_length=50,
            ),
        ),
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    'ALTER TABLE "reservations_notification" ADD CONSTRAINT '
                    '"notification_kind_valid" CHECK ("kind" IN ('
                    + ", ".join(f"'{kind}'" for kind in KINDS)
                    + ")) NOT VALID",
                    'ALTER TABLE "reservations_notification" '
                    'DROP CONSTRAINT "notification_kind_valid"',
                ),
            ],
            state_operations=[
                migrations.AddConstraint(
                    model_name="notification",
                    constraint=models.CheckConstraint(
                        condition=models.Q(kind__in=KINDS),
                        name="notification_kind_valid",
                    ),
                ),
            ],
        ),
    ]
