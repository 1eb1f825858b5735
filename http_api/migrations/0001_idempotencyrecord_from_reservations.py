"""IdempotencyRecord moves here from the reservations app, by state alone.

The table, `reservations_idempotencyrecord`, stays as it is (rows, indexes, the
sequence): this migration only tells Django's state that the model is now
http_api's. It depends on the reservations migration that gave the table its last
shape, so on a fresh database that migration creates the table first; reservations
0005 then takes the model out of the reservations app's state.

A dependency of the migration graph only: no module of http_api imports reservations.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("reservations", "0004_idempotency_response_as_bytes"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="IdempotencyRecord",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("scope", models.CharField(max_length=100)),
                        ("key", models.CharField(max_length=255)),
                        ("fingerprint", models.CharField(max_length=64)),
                        (
                            "response_status",
                            models.PositiveSmallIntegerField(blank=True, null=True),
                        ),
                        (
                            "response_content",
                            models.BinaryField(blank=True, null=True),
                        ),
                        (
                            "response_content_type",
                            models.CharField(blank=True, default="", max_length=255),
                        ),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("completed_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "user",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="idempotency_records",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={
                        "db_table": "reservations_idempotencyrecord",
                        "indexes": [
                            models.Index(
                                fields=["created_at"], name="idempotency_created_idx"
                            )
                        ],
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("user", "scope", "key"),
                                name="idempotency_key_unique",
                            )
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
