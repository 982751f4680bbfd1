"""Reliability issue #16: Postgres connections that die while idle are absorbed, and a WebSocket
handshake never waits on the database beyond WS_AUTH_TIMEOUT_S."""

from __future__ import annotations

import asyncio
import contextlib

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.test import Client

from accounts import asyncdb
from tests.chat.wsclient import ws_with_key

pytestmark = pytest.mark.django_db(transaction=True)


def terminate_backends() -> int:
    """End every other backend of the test database, as an operator's pg_terminate_backend would;
    returns once they are gone (the timeout argument makes Postgres wait for each)."""
    params = connections["default"].get_connection_params()
    kwargs = {key: value for key, value in params.items() if key not in ("cursor_factory", "context")}
    with psycopg.connect(**kwargs, autocommit=True) as admin:
        (ended,) = admin.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    return ended


async def idle_pool_connections(count: int) -> None:
    """Leave `count` connections idle in this loop's async pool (so that all of them die)."""
    pool = await asyncdb._pool()
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(count):
            await stack.enter_async_context(pool.connection())


@pytest.fixture(autouse=True)
def _fresh_test_connection():
    """The test's own connection (pytest-django flushes the database through it) died with the
    others: give it back so that the teardown gets a working one."""
    yield
    connection = connections["default"]
    connection.close()
    # Django's own pool still holds the connections that were terminated, and checking them one
    # by one on checkout backs off for longer than the pool's timeout: the next tests (and the
    # flush after this one) get a new pool instead.
    if connection.vendor == "postgresql" and connection.pool is not None:
        connection.close_pool()


@pytest.fixture
async def probe():
    await asyncdb.execute("CREATE TABLE dbfaults_probe (v integer PRIMARY KEY)", ())
    yield
    await asyncdb.execute("DROP TABLE dbfaults_probe", ())


async def test_statements_after_the_backends_were_terminated_reach_their_callers_without_error(probe):
    await idle_pool_connections(3)
    assert await sync_to_async(terminate_backends)() >= 3

    # A batch of writes and reads, then a lone write and a lone read: none sees the dead connections.
    batch = await asyncio.gather(
        asyncdb.execute("INSERT INTO dbfaults_probe (v) VALUES (1) RETURNING v", ()),
        asyncdb.execute("INSERT INTO dbfaults_probe (v) VALUES (2) RETURNING v", ()),
        asyncdb.execute("SELECT 41 + 1", ()),
    )
    assert batch == [[(1,)], [(2,)], [(42,)]]
    assert await sync_to_async(terminate_backends)() >= 1
    assert await asyncdb.execute("INSERT INTO dbfaults_probe (v) VALUES (3) RETURNING v", ()) == [(3,)]
    assert await sync_to_async(terminate_backends)() >= 1
    assert await asyncdb.execute("SELECT v FROM dbfaults_probe ORDER BY v", ()) == [(1,), (2,), (3,)]


async def test_a_write_is_not_sent_again_when_its_commit_may_have_been_made(probe, monkeypatch):
    """The connection dies once the COMMIT was handed over: the write's caller gets the error
    (it may have been committed), the read of the same batch is sent again and answered."""
    sent_commits = asyncio.Event()
    real_queue = asyncdb._queue

    async def queue_then_die(cursors, cursor, command):
        await real_queue(cursors, cursor, command)
        if command == "COMMIT" and not sent_commits.is_set():
            sent_commits.set()
            await cursor.connection.close()  # as if the network went right after the COMMIT
            raise psycopg.OperationalError("the connection is closed")

    monkeypatch.setattr(asyncdb, "_queue", queue_then_die)
    write, read = await asyncio.gather(
        asyncdb.execute("INSERT INTO dbfaults_probe (v) VALUES (7) RETURNING v", ()),
        asyncdb.execute("SELECT 6 * 7", ()),
        return_exceptions=True,
    )
    assert isinstance(write, psycopg.OperationalError)
    assert read == [(42,)]
    assert sent_commits.is_set()


async def test_twenty_sockets_open_after_the_backends_were_terminated(user_key, settings):
    settings.WS_MAX_SOCKETS_PER_KEY = 50
    _, raw_key = await user_key("alice", scopes="chat")
    await idle_pool_connections(3)
    assert await sync_to_async(terminate_backends)() >= 3

    communicators = [ws_with_key(raw_key) for _ in range(20)]
    results = await asyncio.gather(*(each.connect(timeout=10) for each in communicators))
    assert [connected for connected, _ in results] == [True] * 20
    for each in communicators:
        await each.send_json_to({"type": "ping"})
        assert await each.receive_json_from(timeout=10) == {"type": "pong"}
    for each in communicators:
        await each.disconnect()


async def test_an_orm_request_works_after_the_backends_were_terminated(alice):
    """Through the real ASGI handler: Django's test Client skips the request_started signal on
    which connections are checked (CONN_HEALTH_CHECKS)."""
    from channels.testing import HttpCommunicator
    from django.conf import settings

    from evaproject.asgi import application

    client = Client()
    await sync_to_async(client.force_login)(alice)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()

    async def keys_page() -> int:
        page = HttpCommunicator(application, "GET", "/keys/", headers=[(b"cookie", cookie), (b"host", b"localhost")])
        return (await page.get_response(timeout=10))["status"]

    assert await keys_page() == 200
    assert await sync_to_async(terminate_backends)() >= 1
    assert await keys_page() == 200


@pytest.fixture(params=["hangs", "fails"])
def lookup_unavailable(request, monkeypatch, settings):
    """The key lookup's database never answers (an Event nobody sets), or fails at once."""
    import accounts.api_keys

    settings.WS_AUTH_TIMEOUT_S = 0.5

    async def hang(sql, params):
        await asyncio.Event().wait()

    async def fail(sql, params):
        raise psycopg.OperationalError("connection refused")

    monkeypatch.setattr(accounts.api_keys.asyncdb, "execute", hang if request.param == "hangs" else fail)
    return request.param


async def test_a_handshake_without_the_database_ends_within_the_bound_with_an_error_frame(lookup_unavailable, settings):
    communicator = ws_with_key("eva_000000000000_whatever")
    loop = asyncio.get_running_loop()
    started = loop.time()
    connected, _ = await communicator.connect(timeout=10)
    assert connected
    assert await communicator.receive_json_from(timeout=10) == {
        "type": "error",
        "code": "auth_unavailable",
        "message": "Authentication is unavailable; try again.",
    }
    assert await communicator.receive_output(timeout=10) == {"type": "websocket.close", "code": 4503}
    assert loop.time() - started < settings.WS_AUTH_TIMEOUT_S + 2
    await communicator.disconnect()


@pytest.mark.parametrize("path", ["/api/v1/chat/stream", "/api/v1/chat"])
async def test_an_http_key_lookup_without_the_database_is_a_503_within_the_bound(lookup_unavailable, settings, path):
    """SSE and the REST chat endpoint bound their key lookup as the handshake does (#16)."""
    from tests.chat.test_sse import request

    loop = asyncio.get_running_loop()
    started = loop.time()
    reply = await request(path, {"message": "Salut"}, key="eva_000000000000_whatever")
    assert reply.status == 503
    assert reply.json()["code"] == "auth_unavailable"
    assert loop.time() - started < settings.WS_AUTH_TIMEOUT_S + 2


def test_a_sync_rest_endpoint_whose_database_is_gone_answers_503(monkeypatch, client):
    """A sync endpoint's key lookup (the ORM in the request's thread) failing on a lost database
    is a clear 503 `database_unavailable`, not a 500 (#16)."""
    from django.db import OperationalError

    import accounts.auth

    def gone(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(accounts.auth, "api_key_authenticate", gone)
    reply = client.get("/api/v1/sessions", headers={"X-API-Key": "eva_000000000000_whatever"})
    assert reply.status_code == 503
    assert reply.json()["code"] == "database_unavailable"


async def turn(store, user_id: int, request_id: str, at) -> int:
    session_pk = await store.turn_begin(owner_id=user_id, session_id="s", content="q", request_id=request_id, at=at)
    await store.turn_finish(
        session_pk=session_pk, content="a", status="complete", backend="ollama", model="m",
        request_id=request_id, ttft_ms=1.0, total_ms=2.0, title="q",
    )
    return session_pk


@sync_to_async
def messages_of(user_id: int) -> list[tuple[str, str, str]]:
    from chat.models import ChatMessage

    return list(
        ChatMessage.objects.filter(session__owner_id=user_id)
        .order_by("id")
        .values_list("role", "content", "request_id")
    )


async def test_a_chat_turn_whose_connection_dies_after_its_commit_was_sent_is_sent_again_and_stored_once(
    user_key, monkeypatch
):
    """The turn's two writes are declared safe to send again (asyncdb.resend_safe): the caller
    gets no error, and the turn is stored once."""
    from django.utils import timezone

    from chat.store import PostgresChatStore

    user, _ = await user_key()
    from chat import store

    real_queue, real_run_isolated = asyncdb._queue, asyncdb._run_isolated
    in_batch: set[str] = set()
    died: list[str] = []

    async def run_isolated(conn, batch, commit_sent):
        in_batch.clear()
        in_batch.update(sql for (sql, _), _ in batch)
        return await real_run_isolated(conn, batch, commit_sent)

    async def queue_then_die(cursors, cursor, command):
        await real_queue(cursors, cursor, command)
        turn_writes = in_batch & {store._TURN_BEGIN_SQL, store._TURN_FINISH_SQL}
        if command == "COMMIT" and turn_writes and not turn_writes & set(died):  # each write's first COMMIT
            died.extend(turn_writes)
            await cursor.connection.close()
            raise psycopg.OperationalError("the connection is closed")

    monkeypatch.setattr(asyncdb, "_run_isolated", run_isolated)
    monkeypatch.setattr(asyncdb, "_queue", queue_then_die)
    await turn(PostgresChatStore(), user.pk, "r1", timezone.now())
    assert set(died) == {store._TURN_BEGIN_SQL, store._TURN_FINISH_SQL}
    assert await messages_of(user.pk) == [("user", "q", "r1"), ("assistant", "a", "r1")]


async def test_the_chat_turns_writes_sent_twice_store_once(user_key):
    """What a resend does when the first COMMIT was made and only its answer lost: the same
    statements with the same parameters again store nothing more and answer as the first time."""
    from django.utils import timezone

    from chat import store

    user, _ = await user_key()
    begin = {"owner": user.pk, "session": "s", "title": "q", "content": "q", "request_id": "r1", "at": timezone.now()}
    first = await asyncdb.execute(store._TURN_BEGIN_SQL, begin)
    assert await asyncdb.execute(store._TURN_BEGIN_SQL, begin) == first
    finish = {
        "session_pk": first[0][0], "content": "a", "status": "complete", "backend": "ollama", "model": "m",
        "request_id": "r1", "ttft_ms": 1.0, "total_ms": 2.0, "at": timezone.now(), "title": "q",
        "done_reason": "stop", "asked": "r1",
    }
    assert await asyncdb.execute(store._TURN_FINISH_SQL, finish) == [(first[0][0],)]
    assert await asyncdb.execute(store._TURN_FINISH_SQL, finish) == [(first[0][0],)]
    await turn(store.PostgresChatStore(), user.pk, "r2", timezone.now())  # another request: stored
    assert await messages_of(user.pk) == [
        ("user", "q", "r1"), ("assistant", "a", "r1"), ("user", "q", "r2"), ("assistant", "a", "r2"),
    ]
