"""IdempotencyRecord leaves the reservations app's state for http_api's.

State only: the table `reservations_idempotencyrecord` and its rows stay where they
are (http_api's model names it in `db_table`). The model's content type is renamed
with it, so permissions granted on it and admin log entries follow; on a fresh
database there is no content type yet and the rename does nothing.
"""

from django.db import migrations

MODEL = "idempotencyrecord"


def rename_content_type(old_app: str, new_app: str):
    def rename(apps, schema_editor):
        content_type = apps.get_model("contenttypes", "ContentType")
        db = schema_editor.connection.alias
        if (
            content_type.objects.using(db)
            .filter(app_label=new_app, model=MODEL)
            .exists()
        ):
            return  # already there (created by a later post_migrate): keep that one
        content_type.objects.using(db).filter(app_label=old_app, model=MODEL).update(
            app_label=new_app
        )

    return rename


class Migration(migrations.Migration):
    dependencies = [
        ("reservations", "0004_idempotency_response_as_bytes"),
        ("http_api", "0001_idempotencyrecord_from_reservations"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="IdempotencyRecord")],
            database_operations=[],
        ),
        migrations.RunPython(
            rename_content_type("reservations", "http_api"),
            rename_content_type("http_api", "reservations"),
        ),
    ]
