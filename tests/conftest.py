"""Test-wide fixtures. Settings defaults for tests live in tests/pytest.ini (real Postgres, Redis)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model


@pytest.fixture
def make_user(db):
    """Create a user; `make_user("alice")`."""

    def make(username: str = "alice", *, password: str = "correct horse battery", **extra):
        return get_user_model().objects.create_user(username=username, password=password, **extra)

    return make


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture(scope="session", autouse=True)
def flush_outwaits_live_servers(django_db_setup, django_db_blocker):
    """Live servers (other processes on the test database) may still be writing a metric row when
    a test's flush truncates every table; should the two deadlock, Postgres aborts the statement
    of whichever side checks first. The test process's connections check late, so the server's
    write is the one aborted (it logs the lost row) and the flush goes through."""
    from django.db import DatabaseError, connections
    from django.db.backends.signals import connection_created

    def wait_longer_for_deadlocks(sender, connection, **kwargs):
        if connection.vendor != "postgresql":
            return
        try:
            with connection.cursor() as cursor:
                cursor.execute("SET deadlock_timeout = '30s'")
        except DatabaseError:  # not a superuser: keep the default
            pass

    connection_created.connect(wait_longer_for_deadlocks, weak=False, dispatch_uid="tests.deadlock_timeout")
    with django_db_blocker.unblock():
        connections.close_all()  # those opened during set-up reconnect with the setting
    yield
    connection_created.disconnect(dispatch_uid="tests.deadlock_timeout")


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix) -> None:
    """EVA_TEST_DB_SUFFIX lets several test runs share one Postgres without sharing a database."""
    import os

    from django.conf import settings

    suffix = os.environ.get("EVA_TEST_DB_SUFFIX")
    if suffix:
        test_settings = settings.DATABASES["default"].setdefault("TEST", {})
        test_settings["NAME"] = f"test_{settings.DATABASES['default']['NAME']}_{suffix}"


@pytest.fixture
def user_key():
    """`await user_key("alice")` → (user, plaintext key with chat+tts scopes)."""
    from asgiref.sync import sync_to_async

    from accounts.api_keys import api_key_create

    @sync_to_async
    def make(username: str = "alice", scopes: str = "chat,tts"):
        user, _ = get_user_model().objects.get_or_create(username=username)
        return user, api_key_create(owner=user, name=f"{username}-key", scopes=scopes)[1]

    return make


@pytest.fixture
def ollama(settings):
    """A running Ollama stand-in; settings.OLLAMA_URL points at it."""
    from tests.standins.ollama_server import OllamaStandIn

    server = OllamaStandIn().start()
    settings.OLLAMA_URL = server.url
    settings.OLLAMA_MODEL = "phi3:mini"
    yield server
    server.stop()


@pytest.fixture(autouse=True)
async def _close_db_connections_opened_by_async_code():
    """ORM calls from async code run in asgiref's worker thread; close what they opened there."""
    yield
    from asgiref.sync import sync_to_async
    from django.db import connections

    from accounts.asyncdb import close_async_pool
    from chat.generation import drain_background_writes
    from chat.llm.ollama import close_shared_client
    from metrics.recorder import stop_metric_writer

    await drain_background_writes()
    await stop_metric_writer()
    await close_shared_client()
    await close_async_pool()
    await sync_to_async(connections.close_all)()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """PBKDF2 at production strength costs ~0.3 s a login; tests log in a lot."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="session", autouse=True)
def _close_db_pool_before_dropping_the_test_database(django_db_setup, django_db_blocker):
    """Pooled connections opened by executor threads outlive the tests, and live servers' too: end
    them so the test database can be dropped (otherwise Postgres refuses: "being accessed by other
    users"). Public API only: close_pool() (a pool never used is only created, unopened, and
    closed), and the server's own pg_stat_activity, from its maintenance database."""
    yield
    import psycopg
    from django.db import connections

    with django_db_blocker.unblock():
        for each in connections.all():
            if each.vendor != "postgresql":
                continue
            each.close()
            each.close_pool()
            settings = each.settings_dict
            if not settings["NAME"].startswith("test_"):
                continue  # Django names test databases test_*: none was set up (no test used one)
            given = {"user": settings["USER"], "password": settings["PASSWORD"], "host": settings["HOST"]}
            given["port"] = settings["PORT"]
            with psycopg.connect(dbname="postgres", autocommit=True, **{k: v for k, v in given.items() if v}) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    [settings["NAME"]],
                )


# The live daphne server and its Ollama stand-in (session-wide), for tests that need real sockets.
from tests.live_server import LiveServer, live_asgi, live_uvicorn, ollama_behaviour, web_ollama  # noqa: E402, F401
