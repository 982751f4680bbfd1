"""Load: 200 concurrent sockets, 5 messages each, against a real daphne on Redis and Postgres.

EVA runs in its own daphne process and the Ollama stand-in in another, as in production: in
one process with the test's clients, the three compete for one interpreter lock and the test
measures that contention instead of EVA.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
import websockets
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model

from accounts.api_keys import api_key_create
from chat.models import ChatMessage
from tests.live_server import ROOT, start_daphne, stop_process

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.timeout(300)]

SOCKETS = 200
MESSAGES = 5


@pytest.fixture
def ollama_process():
    """The Ollama stand-in in its own process, echoing each message (first token after 10 ms, then every 5 ms)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.standins.ollama_server", "--port", "0", "--first-token-ms", "10",
         "--token-interval-ms", "5", "--tokens", "0"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    line = process.stdout.readline()  # "Ollama stand-in on http://127.0.0.1:PORT"
    if not line.startswith("Ollama stand-in on "):
        stop_process(process)
        pytest.fail(f"the Ollama stand-in did not start: {line!r}")
    yield line.rsplit(" ", 1)[1].strip()
    stop_process(process)


@sync_to_async
def make_users(count: int) -> list[str]:
    keys = []
    for i in range(count):
        user = get_user_model().objects.create_user(f"user{i}")
        keys.append(api_key_create(owner=user, name="load", scopes="chat")[1])
    return keys


async def converse(ws_url: str, key: str, index: int) -> list[str]:
    """Send MESSAGES messages one after the other on one socket; return the replies it received."""
    replies = []
    async with websockets.connect(ws_url, additional_headers={"X-API-Key": key}, open_timeout=60) as ws:
        for turn in range(MESSAGES):
            await ws.send(json.dumps({"type": "message", "content": f"u{index} m{turn}", "session_id": "default"}))
            parts = []
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=120))
                assert frame["type"] != "error", frame
                if frame["type"] == "token":
                    parts.append(frame["content"])
                elif frame["type"] == "end":
                    break
            replies.append("".join(parts))
    return replies


async def test_200_sockets_with_5_messages_each_all_stored_and_delivered(ollama_process, tmp_path):
    server = start_daphne(
        # Correctness under load is what is tested here; the time EVA adds is bench/chat_latency.py's.
        {"OLLAMA_URL": ollama_process, "LLM_FIRST_TOKEN_DEADLINE_S": "60"},
        tmp_path / "daphne.log",
    )
    try:
        keys = await make_users(SOCKETS)
        ws_url = server.url.replace("http://", "ws://") + "/ws/chat"
        results = await asyncio.gather(
            *(converse(ws_url, key, i) for i, key in enumerate(keys)), return_exceptions=True
        )
    finally:
        stop_process(server.process)
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, f"{len(failures)} sockets failed, first: {failures[0]!r}\n{server.log_tail()}"
    for index, replies in enumerate(results):
        assert replies == [f"Echo: u{index} m{turn}" for turn in range(MESSAGES)]

    @sync_to_async
    def stored_counts():
        return (
            ChatMessage.objects.filter(role="user").count(),
            ChatMessage.objects.filter(role="assistant", status="complete").count(),
        )

    assert await stored_counts() == (SOCKETS * MESSAGES, SOCKETS * MESSAGES)
