# A requeue claims the letters it sends (events.dead_letters.requeue): mark, send
# outside any transaction, record.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("events", "0007_consumerlag"),
    ]

    operations = [
        migrations.AddField(
            model_name="deadletter",
            name="requeue_claim",
            field=models.UUIDField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="deadletter",
            name="requeue_claimed_until",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
    ]
