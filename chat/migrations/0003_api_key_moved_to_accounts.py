# The API key model now lives in the accounts app (accounts 0001): removed from the chat
# app's state only; its table stays, owned by accounts.ApiKey.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("chat", "0002_reply_timings"),
        ("accounts", "0001_initial"),
        ("metrics", "0004_api_key_in_accounts"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="ApiKey")],
            database_operations=[],
        ),
    ]
