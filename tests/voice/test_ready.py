"""/ready with a live TTS worker: the tts check pings it over the channel layer."""

from __future__ import annotations

import pytest
from django.test import AsyncClient

pytestmark = pytest.mark.django_db(transaction=True)


async def test_ready_sees_a_live_worker(voice_settings, module_worker):
    body = (await AsyncClient().get("/ready")).json()
    tts = body["checks"]["tts"]
    assert tts["ok"] is True and "tts" not in body["down"]
    assert tts["transport"] == "channel" and tts["device"] == "cpu"
    assert set(tts["voices"]) == {"fra", "eng"}


async def test_ready_starts_and_sees_the_embedded_child_without_redis(local_transport):
    body = (await AsyncClient().get("/ready")).json()  # the first probe starts the child
    for _ in range(30):
        if body["checks"]["tts"]["ok"]:
            break
        body = (await AsyncClient().get("/ready")).json()
    assert body["checks"]["tts"]["ok"] is True and body["checks"]["tts"]["transport"] == "local"
