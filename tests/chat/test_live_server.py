"""Chat through a real server process, daphne and uvicorn (README's faster option) alike:
SSE and WebSocket clients that go away stop Ollama; bad frames and bad keys get their errors."""

from __future__ import annotations

import json

import httpx
import pytest
import websockets
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model

from accounts.api_keys import api_key_create

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["daphne", "uvicorn"])
def server(request):
    return request.getfixturevalue({"daphne": "live_asgi", "uvicorn": "live_uvicorn"}[request.param])


@sync_to_async
def new_key() -> str:
    user = get_user_model().objects.create_user("mobile")
    return api_key_create(owner=user, name="phone", scopes="chat")[1]


@pytest.mark.parametrize(
    ("path", "body"),
    [("/api/v1/chat/stream", {"message": "long"}), ("/api/v1/chat", {"message": "long", "stream": True})],
)
async def test_an_sse_client_that_goes_away_stops_the_generation(server, web_ollama, ollama_behaviour, path, body):
    ollama_behaviour.reply_tokens = [f" t{i}" for i in range(300)]
    ollama_behaviour.token_interval_s = 0.02
    key = await new_key()
    seen = []
    async with (
        httpx.AsyncClient(timeout=10) as client,
        client.stream("POST", f"{server.url}{path}", json=body, headers={"X-API-Key": key}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                seen.append(line.removeprefix("event: "))
            if seen.count("token") == 3:
                break  # hang up in the middle of the reply
    assert seen[0] == "start"
    assert await web_ollama.last_chat_hung_up(within_s=5)
    assert web_ollama.chat_requests()[-1].tokens_sent < 300


async def test_sse_streams_end_and_json_replies_still_come_from_django(server, web_ollama, ollama_behaviour):
    key = await new_key()
    async with httpx.AsyncClient(timeout=10, headers={"X-API-Key": key}) as client:
        for _ in range(2):  # the connection is kept alive after a complete stream
            streamed = await client.post(
                f"{server.url}/api/v1/chat", json={"message": "Salut"}, headers={"Accept": "text/event-stream"}
            )
            assert streamed.status_code == 200
            events = [line.removeprefix("event: ") for line in streamed.text.splitlines() if line.startswith("event: ")]
            assert events[0] == "start" and events[-1] == "end"
        answered = await client.post(f"{server.url}/api/v1/chat", json={"message": "Salut"})
    assert answered.status_code == 200 and answered.json()["response"] == "Echo: Salut"


async def test_a_mobile_websocket_client_streams_a_reply(server, web_ollama, ollama_behaviour):
    key = await new_key()
    url = server.url.replace("http://", "ws://") + "/ws/chat"
    async with websockets.connect(url, additional_headers={"X-API-Key": key}) as ws:
        await ws.send(json.dumps({"type": "message", "content": "Salut", "session_id": "test"}))
        frames = []
        while not frames or frames[-1]["type"] != "end":
            frames.append(json.loads(await ws.recv()))
    assert "".join(f["content"] for f in frames if f["type"] == "token") == "Echo: Salut"


async def test_a_bad_key_closes_the_socket_with_4401(server):
    url = server.url.replace("http://", "ws://") + "/ws/chat"
    async with websockets.connect(url, additional_headers={"X-API-Key": "eva_nope_nope"}) as ws:
        error = json.loads(await ws.recv())
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert error["code"] == "invalid_api_key"
    assert closed.value.rcvd.code == 4401


async def test_a_binary_frame_gets_an_error_and_the_socket_stays_open(server, web_ollama, ollama_behaviour):
    key = await new_key()
    url = server.url.replace("http://", "ws://") + "/ws/chat"
    async with websockets.connect(url, additional_headers={"X-API-Key": key}) as ws:
        await ws.send(b"\x00\x01")
        error = json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "ping"}))
        pong = json.loads(await ws.recv())
    assert error["code"] == "invalid_frame"
    assert pong == {"type": "pong"}


async def test_cancel_stops_the_reply_and_ollama(server, web_ollama, ollama_behaviour):
    ollama_behaviour.reply_tokens = [f" t{i}" for i in range(300)]
    key = await new_key()
    url = server.url.replace("http://", "ws://") + "/ws/chat"
    async with websockets.connect(url, additional_headers={"X-API-Key": key}) as ws:
        await ws.send(json.dumps({"type": "message", "content": "long"}))
        frames = [json.loads(await ws.recv()) for _ in range(3)]  # start and two tokens
        await ws.send(json.dumps({"type": "cancel"}))
        while frames[-1]["type"] != "end":
            frames.append(json.loads(await ws.recv()))
    assert [f["type"] for f in frames[:3]] == ["start", "token", "token"]
    assert frames[-1]["done_reason"] == "cancelled"
    assert await web_ollama.last_chat_hung_up(within_s=5)
    assert web_ollama.chat_requests()[-1].tokens_sent < 300
