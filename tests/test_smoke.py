import pytest
from django.conf import settings
from django.db import connection


@pytest.mark.django_db
def test_runs_on_real_postgres_and_redis():
    assert connection.vendor == "postgresql"
    assert settings.CHANNEL_LAYERS["default"]["BACKEND"] == "channels_redis.core.RedisChannelLayer"


def test_the_asgi_module_leaves_what_it_loaded_out_of_the_garbage_collectors_walks():
    import subprocess
    import sys

    # A fresh interpreter, as a server process starts: importing the application freezes the heap.
    code = "import gc; import evaproject.asgi; print(gc.get_freeze_count())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert int(out.stdout.split()[-1]) > 10_000  # Django, Channels and EVA's modules and their objects
