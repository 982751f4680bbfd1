"""Open /ws/chat sockets end when their credential goes, and each key and user has a cap of them.

Revoking a key (REST, `manage.py apikey revoke`, the admin action), deactivating a user or
logging a browser session out closes that credential's open sockets within 2 s with an `error`
frame and 4401, in this process and (through Redis) in others; the next frame is refused even
when the watcher has not caught up. Over WS_MAX_SOCKETS_PER_KEY / _PER_USER: `too_many_sockets`
and 4429. The real ASGI app, Postgres and Redis throughout; two live servers for the
cross-process cases.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio
import websockets
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client

from accounts.api_keys import api_key_create, api_keys_revoke
from accounts.models import ApiKey
from accounts.revocation import revocation_watcher_stop
from tests.chat.wsclient import ws_with_key, ws_with_session
from tests.live_server import _database_url

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "pw-revoke-123"
WITHIN_S = 2.0


@pytest.fixture(params=["redis", "memory"])
def store(request, settings) -> str:
    """Both ways EVA runs: with REDIS_URL (several processes) and without (one process)."""
    if request.param == "memory":
        settings.REDIS_URL = ""
    return request.param


@pytest.fixture(autouse=True)
async def _fresh_socket_registry() -> AsyncIterator[None]:
    """No marks or counted sockets from earlier runs, whose new database gives ids out again
    (a failed test's sockets never say goodbye: their places would count for SOCKET_LEASE_S)."""
    from django.conf import settings

    if settings.REDIS_URL:
        client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
        async for name in client.scan_iter(match=f"{settings.CHANNEL_LAYER_PREFIX}:ws:*"):
            await client.delete(name)
        await client.aclose()
    yield
    await revocation_watcher_stop()


@sync_to_async
def make_user(username: str = "alice", **extra) -> object:
    return get_user_model().objects.create_user(username, password=PASSWORD, **extra)


@sync_to_async
def make_key(user, name: str = "phone") -> tuple[int, str]:
    key, plaintext = api_key_create(owner=user, name=name, scopes="chat")
    return key.pk, plaintext


@sync_to_async
def browser(username: str = "alice") -> tuple[Client, str]:
    client = Client()
    assert client.login(username=username, password=PASSWORD)
    return client, client.cookies["sessionid"].value


async def opened(communicator: WebsocketCommunicator) -> WebsocketCommunicator:
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_json_to({"type": "ping"})
    assert await communicator.receive_json_from(timeout=5) == {"type": "pong"}
    return communicator


async def assert_ended(communicator: WebsocketCommunicator, code: str, *, deadline: float) -> None:
    """An error frame with `code`, then close 4401, both before `deadline` (the loop's clock)."""
    async with asyncio.timeout_at(deadline):
        frame = await communicator.receive_json_from(timeout=WITHIN_S)
        closed = await communicator.receive_output(timeout=WITHIN_S)
    assert frame["type"] == "error" and frame["code"] == code, frame
    assert closed == {"type": "websocket.close", "code": 4401}
    await communicator.disconnect()


async def assert_still_open(communicator: WebsocketCommunicator) -> None:
    await communicator.send_json_to({"type": "ping"})
    assert await communicator.receive_json_from(timeout=5) == {"type": "pong"}


async def assert_refused(communicator: WebsocketCommunicator, *, limit: int) -> None:
    connected, _ = await communicator.connect()
    assert connected
    frame = await communicator.receive_json_from(timeout=5)
    assert frame["code"] == "too_many_sockets" and str(limit) in frame["message"]
    assert await communicator.receive_output(timeout=5) == {"type": "websocket.close", "code": 4429}
    await communicator.disconnect()


def deadline() -> float:
    return asyncio.get_running_loop().time() + WITHIN_S


# --- the three revocations, in this process ----------------------------------------------
async def test_revoking_a_key_over_rest_ends_its_sockets(store):
    alice = await make_user()
    key_id, key = await make_key(alice)
    _, other_key = await make_key(alice, "tablet")
    client, _ = await browser()
    first, second, other = [await opened(ws_with_key(k)) for k in (key, key, other_key)]
    by = deadline()
    response = await sync_to_async(client.post)(f"/api/v1/keys/{key_id}/revoke")
    assert response.status_code == 200 and response.json()["revoked_at"]
    await assert_ended(first, "revoked_api_key", deadline=by)
    await assert_ended(second, "revoked_api_key", deadline=by)
    await assert_still_open(other)  # another key of the same user
    await other.disconnect()


async def test_the_admin_action_ends_the_sockets_of_the_keys_it_revokes(store):
    root = await make_user("root", is_staff=True, is_superuser=True)
    key_id, key = await make_key(root)
    client, _ = await browser("root")
    ws = await opened(ws_with_key(key))
    by = deadline()
    await sync_to_async(client.post)("/admin/accounts/apikey/", {"action": "revoke", "_selected_action": [key_id]})
    await assert_ended(ws, "revoked_api_key", deadline=by)
    assert (await ApiKey.objects.aget(pk=key_id)).revoked_at is not None


async def test_deleting_a_key_ends_its_sockets(store):
    key_id, key = await make_key(await make_user())
    ws = await opened(ws_with_key(key))
    by = deadline()
    await ApiKey.objects.filter(pk=key_id).adelete()
    await assert_ended(ws, "revoked_api_key", deadline=by)


async def test_deactivating_a_user_ends_all_her_sockets(store):
    alice = await make_user()
    _, key = await make_key(alice)
    _, session = await browser()
    by_key, by_cookie = await opened(ws_with_key(key)), await opened(ws_with_session(session))
    by = deadline()
    alice.is_active = False
    await alice.asave()
    await assert_ended(by_key, "user_inactive", deadline=by)
    await assert_ended(by_cookie, "user_inactive", deadline=by)


async def test_a_user_made_active_again_may_open_sockets_again(store):
    alice = await make_user()
    _, key = await make_key(alice)
    ws = await opened(ws_with_key(key))
    by = deadline()
    alice.is_active = False
    await alice.asave()
    await assert_ended(ws, "user_inactive", deadline=by)
    alice.is_active = True
    await alice.asave()
    again = await opened(ws_with_key(key))
    await again.send_json_to({"type": "clear", "session_id": "default"})  # a checked frame: no mark left
    assert (await again.receive_json_from(timeout=5))["type"] == "cleared"
    await again.disconnect()


async def test_logging_out_ends_that_sessions_sockets_only(store):
    alice = await make_user()
    _, key = await make_key(alice)
    leaving, leaving_session = await browser()
    _, staying_session = await browser()
    ended = await opened(ws_with_session(leaving_session))
    other_tab = await opened(ws_with_session(leaving_session))
    other_browser = await opened(ws_with_session(staying_session))
    phone = await opened(ws_with_key(key))
    by = deadline()
    response = await sync_to_async(leaving.post)("/logout/")
    assert response.status_code == 302
    await assert_ended(ended, "logged_out", deadline=by)
    await assert_ended(other_tab, "logged_out", deadline=by)
    await assert_still_open(other_browser)
    await assert_still_open(phone)
    await other_browser.disconnect()
    await phone.disconnect()


async def test_revoking_a_key_mid_reply_stops_the_reply(ollama, store):
    ollama.behaviour.reply_tokens = [f" t{i}" for i in range(500)]
    ollama.behaviour.token_interval_s = 0.01
    key_id, key = await make_key(await make_user())
    ws = await opened(ws_with_key(key))
    await ws.send_json_to({"type": "message", "content": "long"})
    assert (await ws.receive_json_from(timeout=5))["type"] == "start"
    await sync_to_async(api_keys_revoke)(keys=ApiKey.objects.filter(pk=key_id))
    async with asyncio.timeout(WITHIN_S):
        while (frame := await ws.receive_json_from(timeout=WITHIN_S))["type"] == "token":
            pass
    assert frame["type"] == "error" and frame["code"] == "revoked_api_key"
    assert await ws.receive_output(timeout=WITHIN_S) == {"type": "websocket.close", "code": 4401}
    await ws.disconnect()
    assert await ollama.last_chat_hung_up(within_s=5)


async def test_with_redis_down_a_socket_opens_and_a_revocation_here_still_ends_it(settings):
    import socket

    key_id, key = await make_key(await make_user())
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        settings.REDIS_URL = f"redis://127.0.0.1:{probe.getsockname()[1]}/0"
    ws = await opened(ws_with_key(key))
    by = deadline()
    await sync_to_async(api_keys_revoke)(keys=ApiKey.objects.filter(pk=key_id))
    await assert_ended(ws, "revoked_api_key", deadline=by)


# --- another process revokes ------------------------------------------------------------
def _manage_env() -> dict[str, str]:
    from django.conf import settings

    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "evaproject.settings",
        "DATABASE_URL": _database_url(settings.DATABASES["default"]),
        "REDIS_URL": settings.REDIS_URL,
        "CHANNEL_LAYER_PREFIX": settings.CHANNEL_LAYER_PREFIX,
    }


async def revoke_in_another_process(key_id: int, username: str = "alice") -> None:
    command = [sys.executable, "manage.py", "apikey", "revoke", "--user", username, str(key_id)]
    process = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, env=_manage_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode(errors="replace")


async def test_a_key_revoked_by_another_process_ends_the_socket_here():
    key_id, key = await make_key(await make_user())
    ws = await opened(ws_with_key(key))
    await revoke_in_another_process(key_id)
    await assert_ended(ws, "revoked_api_key", deadline=deadline())


async def test_the_next_frame_is_refused_when_the_watcher_has_not_caught_up(ollama):
    key_id, key = await make_key(await make_user())
    ws = await opened(ws_with_key(key))
    await revocation_watcher_stop()  # this process hears nothing from Redis now
    await revoke_in_another_process(key_id)
    await assert_still_open(ws)  # a ping asks nothing of Redis: nobody has told this process
    await ws.send_json_to({"type": "message", "content": "still there?"})
    await assert_ended(ws, "revoked_api_key", deadline=deadline())
    assert ollama.chat_requests() == []


# --- caps -----------------------------------------------------------------------------------
async def test_a_key_over_its_cap_is_refused_and_a_closed_socket_frees_its_place(store, settings):
    settings.WS_MAX_SOCKETS_PER_KEY = 2
    alice = await make_user()
    _, key = await make_key(alice)
    _, other_key = await make_key(alice, "tablet")
    first, second = await opened(ws_with_key(key)), await opened(ws_with_key(key))
    await assert_refused(ws_with_key(key), limit=2)
    other = await opened(ws_with_key(other_key))  # the cap is per key
    await first.disconnect()
    third = await opened(ws_with_key(key))
    for ws in (second, third, other):
        await ws.disconnect()


async def test_a_user_over_her_cap_is_refused_whatever_the_credential(store, settings):
    settings.WS_MAX_SOCKETS_PER_KEY = 0
    settings.WS_MAX_SOCKETS_PER_USER = 2
    alice = await make_user()
    _, key = await make_key(alice)
    _, session = await browser()
    phone, tab = await opened(ws_with_key(key)), await opened(ws_with_session(session))
    await assert_refused(ws_with_session(session), limit=2)
    await assert_refused(ws_with_key(key), limit=2)
    _, bob_key = await make_key(await make_user("bob"))
    bob = await opened(ws_with_key(bob_key))  # the cap is per user
    await tab.disconnect()
    again = await opened(ws_with_session(session))
    for ws in (phone, again, bob):
        await ws.disconnect()


async def test_no_cap_when_set_to_zero(store, settings):
    settings.WS_MAX_SOCKETS_PER_KEY = 0
    settings.WS_MAX_SOCKETS_PER_USER = 0
    _, key = await make_key(await make_user())
    sockets = [await opened(ws_with_key(key)) for _ in range(5)]
    for ws in sockets:
        await ws.disconnect()


# --- two live server processes (daphne and uvicorn), one Redis ------------------------------
async def live_socket(server, key: str):
    url = server.url.replace("http://", "ws://") + "/ws/chat"
    ws = await websockets.connect(url, additional_headers={"X-API-Key": key})
    await ws.send(json.dumps({"type": "ping"}))
    assert json.loads(await ws.recv()) == {"type": "pong"}
    return ws


async def assert_live_ended(ws, code: str, *, close_code: int, deadline: float) -> None:
    async with asyncio.timeout_at(deadline):
        frame = json.loads(await ws.recv())
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert frame["type"] == "error" and frame["code"] == code, frame
    assert closed.value.rcvd is not None and closed.value.rcvd.code == close_code


async def test_revocation_reaches_sockets_in_other_server_processes(live_asgi, live_uvicorn):
    key_id, key = await make_key(await make_user())
    on_daphne, on_uvicorn = await live_socket(live_asgi, key), await live_socket(live_uvicorn, key)
    by = deadline()
    await sync_to_async(api_keys_revoke)(keys=ApiKey.objects.filter(pk=key_id))
    await assert_live_ended(on_daphne, "revoked_api_key", close_code=4401, deadline=by)
    await assert_live_ended(on_uvicorn, "revoked_api_key", close_code=4401, deadline=by)


async def test_the_cap_counts_sockets_of_every_server_process(live_asgi, live_uvicorn):
    from django.conf import settings

    limit = settings.WS_MAX_SOCKETS_PER_KEY  # the servers' default
    _, key = await make_key(await make_user())
    held = [await live_socket(live_asgi, key) for _ in range(limit // 2)]
    held += [await live_socket(live_uvicorn, key) for _ in range(limit - len(held))]
    url = live_asgi.url.replace("http://", "ws://") + "/ws/chat"
    async with websockets.connect(url, additional_headers={"X-API-Key": key}) as refused:
        await assert_live_ended(refused, "too_many_sockets", close_code=4429, deadline=deadline())
    for ws in held:
        await ws.close()
