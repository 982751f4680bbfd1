"""/ready with a live TTS worker: the tts check pings it over the channel layer."""

from __future__ import annotations

import pytest
from django.test import AsyncClient

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "ready-token-for-voice-tests"


async def ready_details(settings):
    """/ready's details: for READY_TOKEN (and staff sessions) only."""
    settings.READY_TOKEN = TOKEN
    return (await AsyncClient().get("/ready", headers={"Authorization": f"Bearer {TOKEN}"})).json()


async def test_ready_sees_a_live_worker(voice_settings, module_worker):
    body = await ready_details(voice_settings)
    tts = body["checks"]["tts"]
    assert tts["ok"] is True and body["parts"]["tts"] == "up"
    assert tts["transport"] == "channel" and tts["device"] == "cpu"
    assert set(tts["voices"]) == {"fra", "eng"}


async def test_ready_starts_and_sees_the_embedded_child_without_redis(local_transport):
    body = await ready_details(local_transport)  # the first probe starts the child
    for _ in range(30):
        if body["checks"]["tts"]["ok"]:
            break
        body = await ready_details(local_transport)
    assert body["checks"]["tts"]["ok"] is True and body["checks"]["tts"]["transport"] == "local"
