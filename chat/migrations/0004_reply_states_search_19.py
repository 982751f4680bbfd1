"""Issue #19: how a reply ended (done_reason), superseded exchanges (regenerate, edit; a partial
index on the user messages' (session, request_id) lets a reply find its message), and the
indexes of conversation search.

Search matches titles and message text case-insensitively (Django's icontains:
UPPER(column) LIKE UPPER('%q%')). On Postgres, trigram GIN indexes on UPPER(column) serve
that LIKE (pg_trgm, a trusted extension since Postgres 13: the database's owner may create it);
other databases scan, which the embedded SQLite default can afford.
"""

from typing import Any

from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

TRIGRAM_INDEXES = (
    ("chat_message_content_trgm", "chat_chatmessage", "content"),
    ("chat_session_title_trgm", "chat_chatsession", "title"),
)


def trigram_indexes_create(apps: Any, schema_editor: BaseDatabaseSchemaEditor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for name, table, column in TRIGRAM_INDEXES:
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {name} ON {table} USING gin (UPPER({column}) gin_trgm_ops)"
        )


def trigram_indexes_drop(apps: Any, schema_editor: BaseDatabaseSchemaEditor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, _table, _column in TRIGRAM_INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):

    dependencies = [
        ("chat", "0003_api_key_moved_to_accounts"),
    ]

    operations = [
        migrations.AddField(
            model_name="chatmessage",
            name="done_reason",
            field=models.CharField(blank=True, db_default="", default="", max_length=32),
        ),
        migrations.AddField(
            model_name="chatmessage",
            name="superseded_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddIndex(
            model_name="chatmessage",
            index=models.Index(
                condition=models.Q(("role", "user")), fields=["session", "request_id"], name="chat_message_asked_19"
            ),
        ),
        migrations.RunPython(trigram_indexes_create, trigram_indexes_drop, elidable=False),
    ]
