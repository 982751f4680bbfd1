"""Who may open /ws/chat: API key holders with the chat scope, or logged-in browsers from our Origin."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import Client

from accounts.api_keys import api_key_create
from tests.chat.wsclient import ws_with_key, ws_with_session

pytestmark = pytest.mark.django_db(transaction=True)


@sync_to_async
def make_key(scopes: str = "chat") -> str:
    user = get_user_model().objects.create_user("alice", password="pw-alice-123")
    return api_key_create(owner=user, name="phone", scopes=scopes)[1]


@sync_to_async
def browser_session() -> str:
    get_user_model().objects.create_user("carol", password="pw-carol-123")
    client = Client()
    assert client.login(username="carol", password="pw-carol-123")
    return client.cookies["sessionid"].value


async def assert_closed_with(communicator, code: int, error_code: str) -> None:
    connected, _ = await communicator.connect()
    assert connected
    frame = await communicator.receive_json_from()
    assert frame["type"] == "error" and frame["code"] == error_code
    closed = await communicator.receive_output()
    assert closed == {"type": "websocket.close", "code": code}
    await communicator.disconnect()


async def test_a_valid_key_opens_the_socket():
    communicator = ws_with_key(await make_key())
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_json_to({"type": "ping"})
    assert await communicator.receive_json_from() == {"type": "pong"}
    await communicator.disconnect()


async def test_a_bad_key_closes_with_4401():
    await make_key()
    await assert_closed_with(ws_with_key("eva_000000000000_nope"), 4401, "invalid_api_key")


async def test_a_key_without_chat_scope_closes_with_4401():
    await assert_closed_with(ws_with_key(await make_key("tts")), 4401, "missing_scope")


async def test_no_credentials_close_with_4401():
    from channels.testing import WebsocketCommunicator

    from evaproject.asgi import application

    await assert_closed_with(WebsocketCommunicator(application, "/ws/chat"), 4401, "unauthenticated")


async def test_a_logged_in_browser_from_our_origin_is_accepted():
    communicator = ws_with_session(await browser_session(), origin="http://localhost:8000")
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_json_to({"type": "ping"})
    assert await communicator.receive_json_from() == {"type": "pong"}
    await communicator.disconnect()


async def test_a_cookie_socket_from_another_site_is_refused():
    communicator = ws_with_session(await browser_session(), origin="https://evil.example")
    await assert_closed_with(communicator, 4403, "origin_not_allowed")


async def test_a_cookie_socket_without_origin_is_refused():
    await assert_closed_with(ws_with_session(await browser_session(), origin=None), 4403, "origin_not_allowed")
