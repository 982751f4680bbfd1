"""A reply resumed on ANOTHER server process: two daphne processes sharing Redis and Postgres
(chat/replay.py). A client streams a reply from process A, loses its socket or SSE stream in the
middle, reconnects to process B and resumes: it gets what it missed, then the rest live, then
`end`, with nothing missing and nothing twice, and the reply is stored complete."""

from __future__ import annotations

import json

import httpx
import pytest
import websockets
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model

from accounts.api_keys import api_key_create
from chat.models import ChatMessage
from tests.live_server import start_daphne, stop_process
from tests.polling import awritten

pytestmark = pytest.mark.django_db(transaction=True)

TOKENS = [f" w{i}" for i in range(40)]


@pytest.fixture(scope="module")
def two_servers(django_db_setup, django_db_blocker, web_ollama, tmp_path_factory):
    """Two daphne processes on the same test database, Redis and Ollama stand-in, with a grace."""
    folder = tmp_path_factory.mktemp("resume-live")
    env = {"OLLAMA_URL": web_ollama.url, "REPLAY_GRACE_S": "60"}
    first = start_daphne(env, folder / "a.log")
    try:
        second = start_daphne(env, folder / "b.log")
    except BaseException:
        stop_process(first.process)
        raise
    yield first, second
    stop_process(first.process)
    stop_process(second.process)


@sync_to_async
def new_key(username: str = "mobile") -> str:
    user, _ = get_user_model().objects.get_or_create(username=username)
    return api_key_create(owner=user, name="phone", scopes="chat")[1]


async def wait_stored(request_id: str) -> tuple[str, str]:
    """The stored reply (content, status) once it is there: the test reads what the server wrote, in its time."""
    return await awritten(
        lambda: ChatMessage.objects.filter(request_id=request_id, role="assistant")
        .values_list("content", "status")
        .first(),
        f"the reply {request_id} stored",
    )


def ws_url(server) -> str:
    return server.url.replace("http://", "ws://") + "/ws/chat"


async def test_a_socket_dropped_mid_reply_resumes_on_another_process(two_servers, ollama_behaviour):
    ollama_behaviour.reply_tokens = TOKENS
    ollama_behaviour.token_interval_s = 0.03
    a, b = two_servers
    key = await new_key()
    seen: list[dict] = []
    async with websockets.connect(ws_url(a), additional_headers={"X-API-Key": key}) as ws:
        await ws.send(json.dumps({"type": "message", "content": "long", "session_id": "phone"}))
        while sum(frame["type"] == "token" for frame in seen) < 3:
            seen.append(json.loads(await ws.recv()))
    # The socket is gone mid-reply (closed by the client, as a phone's lost network does).
    request_id = seen[0]["request_id"]
    async with websockets.connect(ws_url(b), additional_headers={"X-API-Key": key}) as ws:
        await ws.send(json.dumps({"type": "resume", "request_id": request_id, "after": seen[-1]["n"]}))
        rest = [json.loads(await ws.recv())]
        while rest[-1]["type"] not in ("end", "error"):
            rest.append(json.loads(await ws.recv()))
    frames = seen + rest
    assert [frame["n"] for frame in frames] == list(range(1, len(frames) + 1))
    assert "".join(frame["content"] for frame in frames if frame["type"] == "token") == "".join(TOKENS)
    assert rest[-1]["type"] == "end" and rest[-1]["done_reason"] == "stop"
    assert await wait_stored(request_id) == ("".join(TOKENS), "complete")


async def test_an_sse_stream_dropped_mid_reply_resumes_on_another_process(two_servers, ollama_behaviour):
    ollama_behaviour.reply_tokens = TOKENS
    ollama_behaviour.token_interval_s = 0.03
    a, b = two_servers
    key = await new_key()
    ids: list[str] = []
    seen: list[dict] = []
    async with (
        httpx.AsyncClient(timeout=10, headers={"X-API-Key": key}) as client,
        client.stream("POST", f"{a.url}/api/v1/chat/stream", json={"message": "long"}) as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                ids.append(line.removeprefix("id: "))
            elif line.startswith("data: "):
                seen.append(json.loads(line.removeprefix("data: ")))
            if sum(frame["type"] == "token" for frame in seen) == 3:
                break  # hang up in the middle of the reply
    request_id = seen[0]["request_id"]
    rest: list[dict] = []
    async with (
        httpx.AsyncClient(timeout=10, headers={"X-API-Key": key}) as client,
        client.stream(
            "GET", f"{b.url}/api/v1/chat/stream/{request_id}", headers={"Last-Event-ID": ids[-1]}
        ) as response,
    ):
        assert response.status_code == 200 and response.headers["content-type"] == "text/event-stream"
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                ids.append(line.removeprefix("id: "))
            elif line.startswith("data: "):
                rest.append(json.loads(line.removeprefix("data: ")))
    frames = seen + rest
    assert ids == [str(n) for n in range(1, len(frames) + 1)]
    assert "".join(frame["content"] for frame in frames if frame["type"] == "token") == "".join(TOKENS)
    assert rest[-1]["type"] == "end"
    assert await wait_stored(request_id) == ("".join(TOKENS), "complete")


async def test_another_users_resume_on_another_process_is_a_404(two_servers, ollama_behaviour):
    a, b = two_servers
    owner, stranger = await new_key("owner"), await new_key("stranger")
    async with httpx.AsyncClient(timeout=10) as client:
        streamed = await client.post(
            f"{a.url}/api/v1/chat/stream", json={"message": "mine"}, headers={"X-API-Key": owner}
        )
        request_id = json.loads(streamed.text.split("data: ", 1)[1].split("\n", 1)[0])["request_id"]
        refused = await client.get(f"{b.url}/api/v1/chat/stream/{request_id}", headers={"X-API-Key": stranger})
        again = await client.get(
            f"{b.url}/api/v1/chat/stream/{request_id}", headers={"X-API-Key": owner, "Last-Event-ID": "1"}
        )
    assert refused.status_code == 404 and refused.json()["code"] == "not_found"
    assert again.status_code == 200 and again.text.rstrip().split("\n\n")[-1].split("\n")[1] == "event: end"
