"""Load: 200 concurrent sockets, 5 messages each, through the real ASGI app, Redis and Postgres."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model

from chat.api_keys import api_key_create
from chat.models import ChatMessage
from tests.chat.wsclient import ws_with_key

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SOCKETS = 200
MESSAGES = 5


@sync_to_async
def make_users(count: int) -> list[str]:
    keys = []
    for i in range(count):
        user = get_user_model().objects.create_user(f"user{i}")
        keys.append(api_key_create(owner=user, name="load", scopes="chat")[1])
    return keys


async def converse(key: str, index: int) -> list[str]:
    """Send MESSAGES messages one after the other; return the replies this socket received."""
    ws = ws_with_key(key)
    connected, _ = await ws.connect(timeout=30)
    assert connected
    replies = []
    for turn in range(MESSAGES):
        await ws.send_json_to({"type": "message", "content": f"u{index} m{turn}", "session_id": "default"})
        parts = []
        while True:
            frame = await ws.receive_json_from(timeout=60)
            assert frame["type"] != "error", frame
            if frame["type"] == "token":
                parts.append(frame["content"])
            elif frame["type"] == "end":
                break
        replies.append("".join(parts))
    await ws.disconnect()
    return replies


async def test_200_sockets_with_5_messages_each_all_stored_and_delivered(ollama, settings):
    settings.RATE_LIMIT_PER_KEY = "1000/minute"
    settings.RATE_LIMIT_PER_USER = "1000/minute"
    ollama.behaviour.first_token_delay_s = 0.01
    ollama.behaviour.token_interval_s = 0.005
    keys = await make_users(SOCKETS)
    results = await asyncio.gather(*(converse(key, i) for i, key in enumerate(keys)))
    for index, replies in enumerate(results):
        assert replies == [f"Echo: u{index} m{turn}" for turn in range(MESSAGES)]

    @sync_to_async
    def stored_counts():
        return (
            ChatMessage.objects.filter(role="user").count(),
            ChatMessage.objects.filter(role="assistant", status="complete").count(),
        )

    assert await stored_counts() == (SOCKETS * MESSAGES, SOCKETS * MESSAGES)
