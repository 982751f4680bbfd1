# The API key model moves here from the chat app. Its table (chat_apikey) and rows stay as
# they are: this migration only adds the model to the accounts app's state, and the content
# type follows, so that admin permissions granted on keys keep working.

from collections.abc import Callable

import django.db.models.deletion
import django.utils.timezone
from django.apps.registry import Apps
from django.conf import settings
from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor


def content_type_to(app_label: str, from_label: str) -> Callable[[Apps, BaseDatabaseSchemaEditor], None]:
    def move(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
        content_type = apps.get_model("contenttypes", "ContentType")
        if not content_type.objects.filter(app_label=app_label, model="apikey").exists():
            content_type.objects.filter(app_label=from_label, model="apikey").update(app_label=app_label)

    return move


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ("chat", "0002_reply_timings"),
        ("contenttypes", "0002_remove_content_type_name"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="ApiKey",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("name", models.CharField(max_length=100)),
                        ("prefix", models.CharField(max_length=16, unique=True)),
                        ("hashed_secret", models.CharField(max_length=64)),
                        ("scopes", models.JSONField(default=list)),
                        ("expires_at", models.DateTimeField(blank=True, null=True)),
                        ("last_used_at", models.DateTimeField(blank=True, null=True)),
                        ("revoked_at", models.DateTimeField(blank=True, null=True)),
                        ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                        (
                            "owner",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="api_keys",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={"verbose_name": "API key", "ordering": ["-created_at"], "db_table": "chat_apikey"},
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(content_type_to("accounts", "chat"), content_type_to("chat", "accounts")),
    ]
