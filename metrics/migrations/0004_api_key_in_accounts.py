# RequestMetric.api_key now points at accounts.ApiKey: the same table (chat_apikey), so the
# database keeps its column and constraint; only the migration state changes.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0001_initial"),
        ("metrics", "0003_error_index"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="requestmetric",
                    name="api_key",
                    field=models.ForeignKey(
                        blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, to="accounts.apikey"
                    ),
                ),
            ],
            database_operations=[],
        ),
    ]
