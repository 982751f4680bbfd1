# The OpenAI-compatible API's requests (openai_api) get a channel of their own.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('metrics', '0005_speech_total'),
    ]

    operations = [
        migrations.AlterField(
            model_name='requestmetric',
            name='channel',
            field=models.CharField(
                choices=[('ws', 'Ws'), ('rest', 'Rest'), ('sse', 'Sse'), ('tts', 'Tts'), ('openai', 'Openai')],
                max_length=8,
            ),
        ),
    ]
