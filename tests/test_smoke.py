import pytest
from django.conf import settings
from django.db import connection


@pytest.mark.django_db
def test_runs_on_real_postgres_and_redis():
    assert connection.vendor == "postgresql"
    assert settings.CHANNEL_LAYERS["default"]["BACKEND"] == "channels_redis.core.RedisChannelLayer"
