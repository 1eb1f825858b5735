# The consumers report their lag here (events.observability.lag.record_lag); the
# admin index reads it instead of asking the broker on every render.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("events", "0006_inbox_duplicates"),
    ]

    operations = [
        migrations.CreateModel(
            name="ConsumerLag",
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
                ("group", models.CharField(max_length=255)),
                ("topic", models.CharField(max_length=249)),
                ("partition", models.IntegerField()),
                (
                    "lag",
                    models.BigIntegerField(
                        help_text="High watermark minus the group's position."
                    ),
                ),
                ("reported_at", models.DateTimeField(auto_now=True)),
            ],
            options={
                "verbose_name": "consumer lag",
                "verbose_name_plural": "consumer lag",
                "constraints": [
                    models.UniqueConstraint(
                        fields=("group", "topic", "partition"),
                        name="consumer_lag_once_per_partition",
                    )
                ],
            },
        ),
    ]
